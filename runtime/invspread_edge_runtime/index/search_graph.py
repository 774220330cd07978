"""Exact search on the GPU without torch or faiss-gpu: a Gemm + TopK ONNX graph run by ONNX Runtime.

The graph is written here as raw protobuf bytes (a few dozen), so neither `onnx` nor any exporter is
needed on the device. The gallery is uploaded once as an ONNX Runtime value on the device; each
query chunk sends only the queries and gets back (Q, k) scores and indices. Queries are chunked so
the (Q, N) score matrix stays within `score_budget_bytes` (Jetsons share memory with the CPU).

faiss-gpu has no Jetson wheel; this runs wherever onnxruntime-gpu does, and on the CPU provider
for tests (where it is only a correctness check: the numpy/faiss paths are faster there).
`OnnxExact` serves it as a search engine (engine.py) of the gallery.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EngineError, MissingDependency
from .engine import Rows

OPSET = 17
IR_VERSION = 8
_FLOAT, _INT64 = 1, 7  # TensorProto.DataType


def search_graph_bytes(dim: int) -> bytes:
    """ModelProto: queries (Q, dim), gallery (N, dim), k (1,) → scores (Q, k), indices (Q, k)."""
    gemm = _node("Gemm", ["queries", "gallery"], ["similarity"], "similarity", [_int_attr("transB", 1)])
    topk = _node(
        "TopK",
        ["similarity", "k"],
        ["scores", "indices"],
        "topk",
        [_int_attr("axis", -1), _int_attr("largest", 1), _int_attr("sorted", 1)],
    )
    graph = b"".join(
        [
            _field_bytes(1, gemm),
            _field_bytes(1, topk),
            _field_bytes(2, b"invedge_search"),
            _field_bytes(11, _value_info("queries", _FLOAT, ["num_queries", dim])),
            _field_bytes(11, _value_info("gallery", _FLOAT, ["num_items", dim])),
            _field_bytes(11, _value_info("k", _INT64, [1])),
            _field_bytes(12, _value_info("scores", _FLOAT, ["num_queries", "k"])),
            _field_bytes(12, _value_info("indices", _INT64, ["num_queries", "k"])),
        ]
    )
    opset = _field_bytes(1, b"") + _field_varint(2, OPSET)
    return b"".join(
        [
            _field_varint(1, IR_VERSION),
            _field_bytes(2, b"invspread-edge"),
            _field_bytes(7, graph),
            _field_bytes(8, opset),
        ]
    )


class OnnxExact:
    """Exact search on an ONNX Runtime device; the gallery is uploaded again after each change."""

    def __init__(self, device: str = "cuda", device_id: int = 0) -> None:
        self.device, self.device_id = device, device_id
        self._topk: OrtTopK | None = None

    @property
    def name(self) -> str:
        return f"onnx-topk:{self.device}"

    def build(self, gallery: Rows) -> None:
        self._topk = OrtTopK(gallery.vectors, device=self.device, device_id=self.device_id)

    def add(self, gallery: Rows, start: int) -> None:
        self.build(gallery)

    def remove(self, gallery: Rows, removed: list[str]) -> None:
        self.build(gallery)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._topk is None:
            raise RuntimeError("OnnxExact.search before build")
        return self._topk.search(queries, k)

    def describe(self) -> dict[str, Any]:
        return {"device": f"{self.device}:{self.device_id}"}


class OrtTopK:
    """Exact top-k over a fixed gallery, on an ONNX Runtime device ("cuda" or "cpu")."""

    def __init__(
        self,
        gallery: np.ndarray,
        device: str = "cuda",
        device_id: int = 0,
        score_budget_bytes: int = 256 << 20,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependency(
                "onnxruntime", "Search on the GPU", "pip install onnxruntime-gpu"
            ) from exc
        gallery = np.ascontiguousarray(gallery, dtype=np.float32)
        self.num_items, self.dim = gallery.shape
        self.device = device
        self._budget = score_budget_bytes
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineError("this onnxruntime has no CUDAExecutionProvider", "Install onnxruntime-gpu")
        providers = [("CUDAExecutionProvider", {"device_id": device_id})] if device == "cuda" else []
        providers.append("CPUExecutionProvider")
        self._session = ort.InferenceSession(search_graph_bytes(self.dim), options, providers=providers)
        if device == "cuda" and "CUDAExecutionProvider" not in self._session.get_providers():
            raise EngineError("the CUDA execution provider could not start", "Check the CUDA libraries")
        self._gallery = ort.OrtValue.ortvalue_from_numpy(gallery, device, device_id)

    @property
    def name(self) -> str:
        return f"onnx-topk:{self.device}"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) float32 scores, most similar first, and (Q, k) int64 gallery rows."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        chunk = max(1, self._budget // (4 * max(self.num_items, 1)))
        k_value = np.array([k], dtype=np.int64)
        scores, indices = [], []
        for start in range(0, len(queries), chunk):
            binding = self._session.io_binding()
            binding.bind_cpu_input("queries", queries[start : start + chunk])
            binding.bind_ortvalue_input("gallery", self._gallery)
            binding.bind_cpu_input("k", k_value)
            binding.bind_output("scores")
            binding.bind_output("indices")
            self._session.run_with_iobinding(binding)
            s, i = binding.copy_outputs_to_cpu()
            scores.append(s)
            indices.append(i)
        if not scores:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(scores), np.concatenate(indices).astype(np.int64)


# --- protobuf wire format (only what the graph above needs) ---------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 fields encode negatives as ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, payload: bytes | str) -> bytes:
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def _int_attr(name: str, value: int) -> bytes:
    # AttributeProto: name = 1, i = 3, type = 20 (INT = 2)
    return _field_bytes(1, name) + _field_varint(3, value) + _field_varint(20, 2)


def _node(op_type: str, inputs: list[str], outputs: list[str], name: str, attrs: list[bytes]) -> bytes:
    # NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5
    parts = [_field_bytes(1, i) for i in inputs] + [_field_bytes(2, o) for o in outputs]
    parts += [_field_bytes(3, name), _field_bytes(4, op_type)] + [_field_bytes(5, a) for a in attrs]
    return b"".join(parts)


def _value_info(name: str, elem_type: int, dims: list[int | str]) -> bytes:
    # ValueInfoProto{name = 1, type = 2}; TypeProto{tensor_type = 1}; Tensor{elem_type = 1, shape = 2}
    # TensorShapeProto{dim = 1}; Dimension{dim_value = 1 | dim_param = 2}
    shape = b"".join(
        _field_bytes(1, _field_varint(1, d) if isinstance(d, int) else _field_bytes(2, d)) for d in dims
    )
    tensor = _field_varint(1, elem_type) + _field_bytes(2, shape)
    return _field_bytes(1, name) + _field_bytes(2, _field_bytes(1, tensor))
