"""The repository's README: every invedge ensemble in it (found from the models' own configs, so a
second writer never replaces the first one's text), and how a client calls them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from ...errors import InvedgeError
from ...metadata import ModelMeta
from .config import EMBEDDING, EMBEDDING_MODEL_KEY, IMAGE, PREPROCESS_MODEL_KEY, read_parameters

MARK = "<!-- written by invedge deploy triton -->"
MIN_TRITON = "2.39 (NGC container 23.10)"  # the Python backend's error codes (a bad image: HTTP 400)
TESTED_TRITON = "2.51 (PyTriton 0.7.0's tritonserver, Python backend)"


@dataclass(frozen=True)
class Ensemble:
    """One invedge ensemble of the repository and the models it chains."""

    name: str
    preprocess: str
    embedding: str
    meta: ModelMeta

    def models(self, repo: Path) -> list[str]:
        """Its models present in `repo` (the ONNX model stays beside a plan the ensemble uses)."""
        names = [self.name, self.preprocess, f"{self.name}_onnx", f"{self.name}_trt", self.embedding]
        return [n for n in dict.fromkeys(names) if (repo / n).is_dir()]


def find_ensembles(repo: Path) -> list[Ensemble]:
    """The invedge ensembles in `repo`: folders whose config.pbtxt names our embedding model."""
    found = []
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        with contextlib.suppress(OSError, ValueError, InvedgeError, KeyError):
            params = read_parameters((folder / "config.pbtxt").read_text(encoding="utf-8"))
            if EMBEDDING_MODEL_KEY in params:
                meta = ModelMeta.from_props(params, source=folder.name)
                found.append(
                    Ensemble(folder.name, params[PREPROCESS_MODEL_KEY], params[EMBEDDING_MODEL_KEY], meta)
                )
    return found


def _section(repo: Path, ensemble: Ensemble) -> str:
    meta = ensemble.meta
    listed = ", ".join(f"`{model}/`" for model in ensemble.models(repo))
    return f"""## `{ensemble.name}`

Models: {listed}. `{ensemble.preprocess}` decodes and normalises with invspread-edge-runtime's own
functions; `{ensemble.embedding}` runs the model. Output `{EMBEDDING}`: {meta.embedding_dim} values.
Embedding space `{meta.space_id}`, image size {meta.image_size}, precision {meta.precision}.
"""


def readme_text(repo: Path, ensembles: list[Ensemble]) -> str:
    sections = "\n".join(_section(repo, e) for e in ensembles)
    model = ensembles[0].name if ensembles else "invedge_NAME"
    return f"""{MARK}
# Triton model repository (invspread-edge)

Written by `invedge deploy triton` (or `invedge export --triton`); this file lists every invedge
ensemble in the repository and is rewritten whenever one is added. Other models here are not ours.
Clients call an ensemble: input `{IMAGE}` (TYPE_STRING, one encoded JPEG/PNG/WebP image per batch row),
output `{EMBEDDING}` (TYPE_FP32, L2-normalised: the same vector as `invedge embed` of the same file).
Every model's `parameters` hold the export's metadata.

{sections}
## Serve it

Triton {MIN_TRITON} or newer (run here: {TESTED_TRITON}). The preprocessing model (Triton's Python
backend) imports `invspread_edge_runtime`: install it in the Python that Triton's Python backend runs
(`pip install invspread-edge-runtime`, or `pip install ./runtime` from the project's checkout; a
Python-backend embedding model, `--embedding python`, also runs ONNX Runtime: add the `[cpu]` extra).
Triton 2.51's Python-backend stub is built against numpy 1 and mis-reads numpy 2 arrays: give that
Python `numpy<2`. Then, with NVIDIA's Triton (NGC container, JetPack):

    tritonserver --model-repository $PWD

PyTriton's `tritonserver` binary (PyPI's nvidia-pytriton) has only the Python backend: it serves a
repository written with `--embedding python --device cpu`, started from the project's checkout with
`make triton-serve REPO=$PWD` (scripts/tritonserver_local.py sets up its backend stub and paths).

## Call it

curl, KServe v2 with the binary tensor extension (the JSON header, then the raw BYTES tensor:
a 4-byte little-endian length before each image); any ensemble above takes the same call:

    IMG=query.jpg
    N=$(stat -c %s $IMG)
    HEADER='{{"inputs":[{{"name":"{IMAGE}","shape":[1,1],"datatype":"BYTES","parameters":{{"binary_data_size":'$((N+4))'}}}}],"outputs":[{{"name":"{EMBEDDING}","parameters":{{"binary_data":false}}}}]}}'
    {{ printf %s "$HEADER"; python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<I', $N))"; cat $IMG; }} |
      curl -s -X POST localhost:8000/v2/models/{model}/infer \\
        -H "Inference-Header-Content-Length: ${{#HEADER}}" -H "Content-Type: application/octet-stream" \\
        --data-binary @-

Python, `pip install 'tritonclient[http,grpc]'` (HTTP on 8000, gRPC on 8001):

    import numpy as np, tritonclient.http as httpclient
    client = httpclient.InferenceServerClient("localhost:8000")
    images = np.array([[open("query.jpg", "rb").read()]], dtype=object)  # (batch, 1)
    image = httpclient.InferInput("{IMAGE}", list(images.shape), "BYTES")
    image.set_data_from_numpy(images)
    vectors = client.infer("{model}", [image]).as_numpy("{EMBEDDING}")  # (batch, dim)

(`tritonclient.grpc` is the same with port 8001.) Or from the toolkit itself:
`invedge search INDEX QUERIES --backend triton:http://localhost:8000/{model}`.
"""
