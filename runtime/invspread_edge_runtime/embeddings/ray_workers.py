"""What runs on the Ray workers of `invedge embed --ray` (the driver's side is ray_embed.py).

Two stages, each a function of one batch (a dict of numpy columns, Ray Data's "numpy" format):
- `decode_images` (CPU tasks): paths → (N, 3, S, S) uint8 with `preprocess.load_image` and
  `to_uint8_chw`, the decoding `Embedder` does; an unreadable image keeps its row, with zero
  pixels and the same reason text ("unreadable image PATH: why") in `reason`.
- `EmbedActor` (one per Ray actor, each with its own backend): those pixels → unit vectors with
  `Embedder.embed_uint8`, the single-process computation.
Rows keep their `pos` (the image's place in the driver's pending list) end to end, so the driver
can put every image back in its place and take it once. This module imports no Ray: Ray imports
it on the workers, from the same installed package as the driver's (every node needs it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import hooks


def decode_images(batch: dict[str, np.ndarray], image_size: int) -> dict[str, np.ndarray]:
    """{"pos", "path"} → {"pos", "pixels", "reason"} ("" for a decoded image)."""
    from ..errors import DataError
    from ..preprocess import load_image, to_uint8_chw

    paths = batch["path"]
    pixels = np.zeros((len(paths), 3, image_size, image_size), dtype=np.uint8)
    reasons = []
    for row, path in enumerate(paths):
        try:
            pixels[row] = to_uint8_chw(load_image(Path(str(path))), image_size)
            reasons.append("")
        except DataError as exc:
            reasons.append(exc.message)
    return {"pos": batch["pos"], "pixels": pixels, "reason": np.array(reasons, dtype=object)}


class EmbedActor:
    """One backend on one Ray actor: decoded batches → {"pos", "vector", "reason", "backend"}.

    `model_path` is the one ONNX file the driver chose (every actor runs the same file, so the
    manifest's model is the one that made every vector); `backend` ("auto" or a name) picks how
    it runs on this actor's node: CUDA or TensorRT where the actor holds a GPU.
    """

    def __init__(self, model_path: str, backend: str, threads: int) -> None:
        from ..embedder import Embedder

        self.embedder = Embedder(model_path, backend=backend, threads=threads, decode_workers=1)
        self.dim = self.embedder.meta.embedding_dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        reasons = batch["reason"]
        ok = np.array([not r for r in reasons], dtype=bool)
        vectors = np.zeros((len(reasons), self.dim), dtype=np.float32)
        if ok.any():
            vectors[ok] = self.embedder.embed_uint8(np.asarray(batch["pixels"])[ok])
        hooks.reached("ray-batch")
        name = np.array([self.embedder.info.name] * len(reasons), dtype=object)
        return {"pos": batch["pos"], "vector": vectors, "reason": reasons, "backend": name}
