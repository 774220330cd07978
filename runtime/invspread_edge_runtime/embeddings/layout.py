"""The embeddings folder: what it holds and where, in one numpy-free place (the CLI reads it too).

A folder holding `embeddings.npy` + `ids.json` + `manifest.json`:
- `embeddings.npy`: (N, d) float32 or float16, L2-normalised rows, loaded memory-mapped and never
  with pickle;
- `ids.json`: N ids, the images' paths relative to `manifest["root"]` (POSIX separators); a video
  frame's id is `SOURCE#t=SECONDS` (sources/frame.py: a file's path as an image's, a stream's name);
- `frames.json` (only when some items are video frames): id → {"source", "index", "time", "live"};
  its sha256 in the manifest, with the manifest's "sources" (what each source did) and "sampling";
- `manifest.json`: the embedding space (checkpoint sha256, dimension), the model file's sha256,
  N, the images that could not be read, and the sha256 of `embeddings.npy` and of `ids.json`
  (checked on load: an edited or damaged file is refused, never half-trusted). Written last: a
  folder without it is unfinished.
- `parts/` while a run is unfinished (see parts.py); `.NAME.staging` and `.NAME.old` beside it
  while a replacement is built and swapped in.
"""

from __future__ import annotations

import os
from pathlib import Path

FORMAT = "invspread-edge-embeddings/1"
DTYPES = ("float32", "float16")
DEFAULT_DTYPE = DTYPES[0]
PART_SIZE = 4096  # rows a writer keeps in memory before it writes them as one part
VECTORS, IDS, MANIFEST, PARTS = "embeddings.npy", "ids.json", "manifest.json", "parts"
FRAMES = "frames.json"
OURS = frozenset({VECTORS, IDS, MANIFEST, PARTS, FRAMES})
REDO = "Embed again with 'invedge embed MODEL IMAGES --out DIR --overwrite'"


def staging_path(out: str | os.PathLike[str]) -> Path:
    """Where `--overwrite` / `--retry-failed` build the new folder: a hidden sibling of `out`."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.staging"


def aside_path(out: str | os.PathLike[str]) -> Path:
    """Where the old folder waits during a swap."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.old"
