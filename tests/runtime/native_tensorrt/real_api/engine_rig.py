"""The doubles of one engine build and load, wired as TensorRT wires them, and a simulated engine.

Used by the per-version checks (check_*.py) through the `rig` fixture of this folder's conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest

PLAN = b"serialized-engine-stand-in"  # what build_serialized_network's IHostMemory would hold
TIMING = b"timing-cache-stand-in"
EMBED_DIM = 32


class Rig:
    """Doubles for one engine build and load, wired as TensorRT wires them, plus a simulated engine."""

    def __init__(self, api: Any, cudart: Any) -> None:
        import numpy as np

        self.api, self.cudart = api, cudart
        trt = api.trt
        self.trt = trt
        self.order: list[str] = []
        self.input_tensor = api.double("ITensor", name="images", shape=trt.Dims((-1, 3, 28, 28)))
        self.network = api.double("INetworkDefinition", num_inputs=1, num_outputs=1)
        self.network.get_input.return_value = self.input_tensor
        self.output_tensor = api.double("ITensor", name="embeddings", shape=trt.Dims((-1, EMBED_DIM)))
        self.network.get_output.return_value = self.output_tensor
        self.timing_cache = api.double("ITimingCache")
        self.timing_cache.serialize.return_value = TIMING  # IHostMemory stand-in: a buffer
        self.config = api.double("IBuilderConfig")
        self.config.create_timing_cache.return_value = self.timing_cache
        self.config.set_timing_cache.return_value = True
        self.profile = api.double("IOptimizationProfile")
        self.builder = api.double("Builder")
        self.builder.create_network.return_value = self.network
        self.builder.create_builder_config.return_value = self.config
        self.builder.create_optimization_profile.return_value = self.profile
        self.builder.build_serialized_network.side_effect = lambda network, config: self._step("build", PLAN)
        self.parser = api.double("OnnxParser", num_errors=0)
        self.parser.parse_from_file.side_effect = lambda path: self._step("parse", True)
        self.engine = api.double("ICudaEngine", num_io_tensors=2)
        self.context = api.double("IExecutionContext")
        self.runtime = api.double("Runtime")
        self.runtime.deserialize_cuda_engine.return_value = self.engine
        self.weight = np.random.default_rng(1).standard_normal((3 * 28 * 28, EMBED_DIM)).astype(np.float32)
        self.addresses: dict[str, int] = {}
        self.shape: tuple[int, ...] | None = None
        self.profile_batches = (1, 64, 64)
        self.executions: list[int] = []  # the batch of each execute_async_v3
        self.engine_dim = EMBED_DIM  # the simulated engine's output width

    @staticmethod
    def execute_ms(rows: int) -> float:
        """The simulated device time of one execute_async_v3 of `rows` rows."""
        return 1.0 + 0.5 * rows

    def _step(self, name: str, value: Any) -> Any:
        self.order.append(name)
        return value

    def module(self, builder: bool = True) -> Any:
        """The `tensorrt` our code imports: real module, doubled GPU-bound classes."""
        classes = {
            "OnnxParser": self.api.constructor("OnnxParser", self.parser),
            "Runtime": self.api.constructor("Runtime", self.runtime),
        }
        if builder:
            classes["Builder"] = self.api.constructor("Builder", self.builder)
        return self.api.module(**classes)

    def install(self, monkeypatch: pytest.MonkeyPatch, builder: bool = True) -> None:
        from invspread_edge_runtime.tensorrt import api as trt_api

        module = self.module(builder)
        monkeypatch.setattr(trt_api, "import_tensorrt", lambda: module)

    # --- the simulated engine: reads its input from simulated device memory, writes embeddings ----

    def simulate_engine(self, min_batch: int, opt_batch: int, max_batch: int, dtype: Any = None) -> None:
        trt = self.trt
        self.profile_batches = (min_batch, opt_batch, max_batch)
        names = ["images", "embeddings"]
        self.engine.get_tensor_name.side_effect = lambda i: names[i]
        self.engine.get_tensor_mode.side_effect = lambda n: (
            trt.TensorIOMode.INPUT if n == "images" else trt.TensorIOMode.OUTPUT
        )
        self.engine.get_tensor_dtype.return_value = dtype if dtype is not None else trt.DataType.FLOAT
        self.engine.get_tensor_profile_shape.side_effect = lambda name, index: [
            trt.Dims((b, 3, 28, 28)) for b in self.profile_batches
        ]
        self.engine.get_tensor_shape.side_effect = lambda n: trt.Dims((-1, self.engine_dim))
        self.engine.create_execution_context.return_value = self.context
        self.context.set_tensor_address.side_effect = self._set_address
        self.context.set_input_shape.side_effect = self._set_shape
        self.context.execute_async_v3.side_effect = self._execute

    def _set_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def _set_shape(self, name: str, shape: tuple) -> bool:
        lo, _, hi = self.profile_batches
        if name != "images" or len(shape) != 4 or tuple(shape[1:]) != (3, 28, 28) or not lo <= shape[0] <= hi:
            return False
        self.shape = tuple(shape)
        return True

    def _execute(self, stream_handle: int) -> bool:
        assert stream_handle in self.cudart.streams, "execute_async_v3 on a stream that was not created"
        assert self.shape is not None, "execute_async_v3 before set_input_shape"
        n = self.shape[0]
        self.executions.append(n)
        self.cudart.launch("execute_async_v3", stream_handle, self.execute_ms(n))
        x = self.cudart.view(self.addresses["images"], self.shape)
        self.cudart.view(self.addresses["embeddings"], (n, EMBED_DIM))[:] = self.reference(x)
        return True

    def reference(self, x: Any) -> Any:
        return x.reshape(len(x), -1) @ self.weight
