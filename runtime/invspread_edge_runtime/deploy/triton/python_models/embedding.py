"""Triton Python-backend model: the embedding model run by ONNX Runtime on the CPU (`1/model.onnx`).

Written by `invedge deploy triton --embedding python` for Triton builds without the ONNX Runtime
backend. It opens the model with invspread_edge_runtime's own ONNX Runtime backend (the session
`invedge embed --backend ort-cpu` uses) and returns L2-normalised rows, as `invedge embed` does; a
request whose rows hold NaN or inf gets an error instead, as `invedge embed` refuses them.
Requests that Triton's dynamic batcher hands over together run as one batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from invspread_edge_runtime.backends.base import l2_normalize, require_finite
from invspread_edge_runtime.backends.ort import OrtBackend
from invspread_edge_runtime.deploy.triton.config import THREADS_KEY
from invspread_edge_runtime.deploy.triton.python_models.responses import (
    error_response,
    model_settings,
    pb_utils,
)
from invspread_edge_runtime.errors import NonFiniteError


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        props, self.meta = model_settings(args)
        model = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        threads = int(props.get(THREADS_KEY, "0"))
        self.model_path = str(model)
        self.backend = OrtBackend(model, "ort-cpu", threads=threads, meta=self.meta)

    def execute(self, requests: list) -> list:
        inputs = [pb_utils.get_input_tensor_by_name(r, self.meta.input_name).as_numpy() for r in requests]
        vectors = self.backend.infer(np.concatenate(inputs))
        answers, start = [], 0
        for batch in inputs:
            rows = vectors[start : start + len(batch)]
            start += len(batch)
            answers.append(self._answer(rows))
        return answers

    def _answer(self, rows: np.ndarray) -> object:
        """Unit rows, or an error for a request with a NaN or infinite row (as `invedge embed`)."""
        try:
            require_finite(rows, self.model_path)
        except NonFiniteError as exc:
            return error_response(pb_utils, str(exc))
        unit = np.ascontiguousarray(l2_normalize(rows), dtype=np.float32)
        return pb_utils.InferenceResponse([pb_utils.Tensor(self.meta.output_name, unit)])

    def finalize(self) -> None:
        self.backend.close()
