"""The answers of the embed and search endpoints, encoded without one Python object per float.

JSON is encoded by orjson (numbers as Python's `json` writes them: the float32 vectors are widened
to float64 first, so each number reads back as exactly the float32 the model gave); `/v1/embed`
answers the vectors as raw float32 instead when the client's `Accept` prefers
`application/octet-stream`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

BINARY = "application/octet-stream"
JSON_TYPE = "application/json"
FLOAT32_LE = np.dtype("<f4")


class FastJSON(Response):
    """A JSON answer encoded by orjson; numpy arrays become lists of numbers."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def wants_binary(accept: str) -> bool:
    """True when `Accept` ranks application/octet-stream above application/json (a tie, `*/*` or no
    header: JSON, the default)."""
    ranks = {BINARY: 0.0, JSON_TYPE: 0.0}
    for item in accept.split(","):
        kind, _, params = item.partition(";")
        kind = kind.strip().lower()
        if kind in ranks:
            ranks[kind] = max(ranks[kind], quality(params))
    return ranks[BINARY] > ranks[JSON_TYPE]


def quality(params: str) -> float:
    """The `q` of a media range's parameters (1 when absent; 0 when not a number from 0 to 1)."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def embeddings_answer(accept: str, space_id: str, names: list[str], vectors: np.ndarray) -> Response:
    """`/v1/embed`'s answer: JSON {"space_id", "dim", "items": [{"name", "embedding"}]}, or with
    `Accept: application/octet-stream` the (N, d) float32 rows, row-major, little-endian."""
    headers = {"Vary": "Accept"}
    if wants_binary(accept):
        count, dim = vectors.shape
        headers |= {"X-Embedding-Dim": str(dim), "X-Embedding-Count": str(count), "X-Space-Id": space_id}
        data = np.ascontiguousarray(vectors, dtype=FLOAT32_LE).tobytes()
        return Response(data, media_type=BINARY, headers=headers)
    rows = vectors.astype(np.float64)  # each number written as json writes a Python float
    items = [{"name": name, "embedding": row} for name, row in zip(names, rows, strict=True)]
    return FastJSON({"space_id": space_id, "dim": int(vectors.shape[1]), "items": items}, headers=headers)
