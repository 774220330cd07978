"""What every explore verb works on: the vectors, ids and image files of an embeddings folder, an
index file or a Milvus collection, read the same way whatever holds them.

    items = open_items("photos.emb")            # or "photos.index", or (None, "milvus:g.db", "photos")
    items.vectors, items.ids, items.locations, items.checksum, items.labels()
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, EmptyGalleryError

HASH_ROWS = 65536  # rows hashed at a time: bounded memory over a memory-mapped million rows
EXPLORE_EXTRA = "pip install 'invspread-edge-runtime[explore]'"  # what installs faiss, scikit-learn, umap
TARGET_HINT = (
    "Give an embeddings folder (invedge embed), an index file (invedge index build) or --store/--collection"
)


@dataclass
class ExploreItems:
    """The items an explore verb reads: `vectors` (N, d) float32 unit rows (possibly a read-only
    memmap), their `ids` and image files (`locations`, absolute; "" when unknown), and where they
    came from (`source` as messages name it, `kind`: embeddings, index or milvus)."""

    vectors: np.ndarray
    ids: list[str]
    locations: list[str]
    space: dict[str, Any]
    source: str
    kind: str
    root: Path | None = None  # the images' root folder when known

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        ids: list[str] | None = None,
        *,
        source: str = "vectors",
        space: dict[str, Any] | None = None,
    ) -> ExploreItems:
        """Items of vectors held in memory (benchmarks, tests, a library caller): ids "0", "1", …
        unless given, no image files."""
        count = len(vectors)
        return cls(
            vectors=vectors,
            ids=[str(i) for i in range(count)] if ids is None else list(ids),
            locations=[""] * count,
            space=dict(space or {"space_id": source}),
            source=source,
            kind="embeddings",
        )

    @cached_property
    def checksum(self) -> str:
        """sha256 hex over the vectors' bytes and the ids: the key of every cache (a map, a layout),
        so a changed gallery never reads another's cached result."""
        digest = hashlib.sha256()
        digest.update(f"{self.vectors.shape}".encode())
        for start in range(0, len(self.vectors), HASH_ROWS):
            block = np.ascontiguousarray(self.vectors[start : start + HASH_ROWS], dtype=np.float32)
            digest.update(memoryview(block.reshape(-1).view(np.uint8)))
        for item in self.ids:
            digest.update(item.encode("utf-8") + b"\0")
        return digest.hexdigest()

    def labels(self) -> list[str] | None:
        """Each item's class folder (the first part of its path under `root`) when every item lies in
        one of at least two sub-folders (an ImageFolder layout); else None (nothing to compare with)."""
        if self.root is None or not self.locations:
            return None
        found: list[str] = []
        for location in self.locations:
            if not location:
                return None
            try:
                parts = Path(location).relative_to(self.root).parts
            except ValueError:
                return None
            if len(parts) < 2:
                return None
            found.append(parts[0])
        return found if len(set(found)) >= 2 else None


def open_items(
    target: str | os.PathLike[str] | None, store: str | None = None, collection: str | None = None
) -> ExploreItems:
    """The items of an embeddings folder, an index file (`target`), or a Milvus collection
    (`store` and `collection`). One-line errors: neither or both given, not found, empty."""
    if target is not None and store is not None:
        raise ConfigError(
            f"{target} and --store name two galleries: read one, not both",
            f"Drop {target} to read the collection, or drop --store/--collection",
        )
    if store is not None or collection is not None:
        if store is None or collection is None:
            raise ConfigError(
                "--store and --collection go together", "Give both: --store milvus:FILE --collection NAME"
            )
        items = _from_milvus(store, collection)
    elif target is None:
        raise ConfigError("nothing to read: no embeddings folder, index file or --store", TARGET_HINT)
    elif not Path(target).exists():
        raise DataError(f"not found: {target}", TARGET_HINT)
    elif Path(target).is_dir():
        items = _from_embeddings(Path(target))
    else:
        items = _from_index(Path(target))
    if not len(items):
        raise EmptyGalleryError(f"{items.source} holds no items", _fill_hint(items))
    return items


def _fill_hint(items: ExploreItems) -> str:
    """How to put items into an empty gallery of this kind."""
    if items.kind == "index":
        return f"Add embeddings first: invedge index add {items.source} EMBEDDINGS"
    if items.kind == "milvus":
        return "Add embeddings first: invedge index add --store STORE --collection NAME EMBEDDINGS"
    return "Embed some images first: invedge embed MODEL IMAGES --out DIR"


def _from_embeddings(path: Path) -> ExploreItems:
    from ..embeddings.reader import load_embeddings

    found = load_embeddings(path)
    root_text = found.manifest.get("root") or ""
    root = Path(root_text).absolute() if root_text else None
    locations = found.locations(frames=False) if root is not None else [""] * len(found.ids)
    return ExploreItems(found.vectors, found.ids, locations, dict(found.space), str(path), "embeddings", root)


def _from_index(path: Path) -> ExploreItems:
    from ..index.index_file import read_index

    found = read_index(path)
    return ExploreItems(
        found.vectors,
        found.ids,
        list(found.locations),
        dict(found.header["space"]),
        str(path),
        "index",
        common_root(found.locations),
    )


def _from_milvus(store: str, collection: str) -> ExploreItems:
    from ..milvus_store.gallery import open_gallery

    with open_gallery(store, collection) as gallery:
        return milvus_items(gallery)


def milvus_items(gallery: Any) -> ExploreItems:
    """The items of an open `MilvusGallery` (the CLI's, or the one `invedge serve` holds)."""
    ids: list[str] = []
    locations: list[str] = []
    rows: list[np.ndarray] = []
    for item, vector, location in gallery.iter_items():
        ids.append(item)
        rows.append(np.asarray(vector, dtype=np.float32))
        locations.append(location)
    vectors = np.stack(rows) if rows else np.zeros((0, gallery.dim), np.float32)
    source = f"collection {gallery.collection} in {gallery.store.shown}"
    return ExploreItems(
        vectors, ids, locations, dict(gallery.space), source, "milvus", common_root(locations)
    )


def common_root(locations: list[str]) -> Path | None:
    """The deepest folder holding every image (an ImageFolder's root when the images lie in class
    folders): where an index or a collection keeps no root of its own. None when any is unknown."""
    if not locations or not all(locations):
        return None
    try:
        common = Path(os.path.commonpath([os.path.dirname(location) for location in locations]))
    except ValueError:  # relative and absolute paths mixed
        return None
    return common
