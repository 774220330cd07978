"""Triton Python-backend model: encoded images (JPEG, PNG, WebP, ...) → the embedding model's input.

Written into a model repository by `invedge deploy triton` (as `1/model.py`). It decodes, resizes and
normalises with invspread_edge_runtime's own functions (the service's decoder, `serve.images.decode`,
and `preprocess.normalize`), so a client's raw image gives the same pixels as `invedge embed` of the
file: invspread-edge-runtime must be installed in the Python that Triton's Python backend runs, with
numpy < 2 where the backend's stub was built against numpy 1 (Triton 2.51's is: it mis-reads numpy 2
arrays, BYTES inputs and output tensors alike).
A row that is not a readable image fails its request with a message naming the row (a client error,
HTTP 400, from Triton 2.39 on; older Triton reports it as an internal error); the other requests of
the batch are answered.
"""

from __future__ import annotations

import numpy as np

from invspread_edge_runtime.deploy.triton.config import DEFAULT_MAX_PIXELS, IMAGE, MAX_PIXELS_KEY
from invspread_edge_runtime.deploy.triton.python_models.responses import (
    error_response,
    model_settings,
    pb_utils,
)
from invspread_edge_runtime.errors import InvedgeError
from invspread_edge_runtime.preprocess import normalize
from invspread_edge_runtime.serve.errors import ServeError
from invspread_edge_runtime.serve.images import decode


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        props, self.meta = model_settings(args)
        self.max_pixels = int(props.get(MAX_PIXELS_KEY, DEFAULT_MAX_PIXELS))

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request: object) -> object:
        rows = pb_utils.get_input_tensor_by_name(request, IMAGE).as_numpy().reshape(-1)
        size = self.meta.image_size
        try:
            pixels = [decode(bytes(row), f"row {i}", size, self.max_pixels) for i, row in enumerate(rows)]
        except (ServeError, InvedgeError) as exc:
            return error_response(pb_utils, exc.message)
        batch = np.ascontiguousarray(normalize(np.stack(pixels), self.meta.mean, self.meta.std))
        return pb_utils.InferenceResponse([pb_utils.Tensor(self.meta.input_name, batch)])
