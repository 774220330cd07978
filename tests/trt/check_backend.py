"""TensorRTBackend against the real TensorRT and cuda-python APIs of one version (run per version
by tests/test_tensorrt_api.py). The engine and context are autospec doubles of the real classes; a
simulated engine reads its input from simulated device memory and writes x @ W back, so these tests
prove our call sequence (shapes, tensor addresses, execute_async_v3, copies, splitting, padding)
and data plumbing; they do not prove that TensorRT ran.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EMBED_DIM
from invspread_edge_runtime.backends.trt import TensorRTBackend
from invspread_edge_runtime.errors import EngineError, ModelError

CHW = (3, 28, 28)
FLOAT = 4


@pytest.fixture
def onnx_file(tmp_path, make_tiny_onnx):
    return make_tiny_onnx(tmp_path / "export" / "model.onnx")


def open_backend(rig, onnx_file, tmp_path, min_batch=1, max_batch=4, **kwargs):
    rig.simulate_engine(min_batch, max_batch, max_batch)
    return TensorRTBackend(
        onnx_file, max_batch=max_batch, cache_dir=tmp_path / "cache", min_batch=min_batch, **kwargs
    )


def images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *CHW)).astype(np.float32)


def test_setup_allocates_for_the_profile_and_binds_addresses(rig, cudart, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path)
    in_bytes, out_bytes = 4 * int(np.prod(CHW)) * FLOAT, 4 * EMBED_DIM * FLOAT
    assert [args for name, args in cudart.calls if name == "cudaMalloc"] == [(in_bytes,), (out_bytes,)]
    assert sorted(rig.addresses.values()) == sorted(cudart.allocations)
    rig.engine.get_tensor_profile_shape.assert_called_once_with("images", 0)
    rig.engine.create_execution_context.assert_called_once_with()
    assert backend.info.name == "trt" and backend.info.max_batch == 4 and backend.info.precision == "fp32"
    assert "NVIDIA Orin (simulated)" in backend.info.device
    backend.close()


@pytest.mark.parametrize("n", [1, 3, 4])
def test_infer_within_the_profile(rig, cudart, onnx_file, tmp_path, n):
    backend = open_backend(rig, onnx_file, tmp_path)
    x = images(n)
    out = backend.infer(x)
    np.testing.assert_allclose(out, rig.reference(x), rtol=1e-5, atol=1e-4)
    rig.context.set_input_shape.assert_called_once_with("images", (n, *CHW))
    stream = int(backend._stream)
    rig.context.execute_async_v3.assert_called_once_with(stream)
    copies = [args for name, args in cudart.calls if name == "cudaMemcpyAsync"]
    assert [(c[2], c[3].name) for c in copies] == [
        (n * int(np.prod(CHW)) * FLOAT, "cudaMemcpyHostToDevice"),
        (n * EMBED_DIM * FLOAT, "cudaMemcpyDeviceToHost"),
    ]
    backend.close()


def test_larger_inputs_are_split_into_profile_sized_chunks(rig, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path, max_batch=4)
    x = images(10, seed=3)
    out = backend.infer(x)
    np.testing.assert_allclose(out, rig.reference(x), rtol=1e-5, atol=1e-4)  # rows in order, none lost
    shapes = [c.args[1][0] for c in rig.context.set_input_shape.call_args_list]
    assert shapes == [4, 4, 2]
    assert rig.context.execute_async_v3.call_count == 3
    backend.close()


def test_batches_below_the_profile_minimum_are_padded(rig, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path, min_batch=2, max_batch=4)
    x = images(5, seed=4)
    out = backend.infer(x)
    assert out.shape == (5, EMBED_DIM)
    np.testing.assert_allclose(out, rig.reference(x), rtol=1e-5, atol=1e-4)
    assert [c.args[1][0] for c in rig.context.set_input_shape.call_args_list] == [4, 2]
    backend.close()


def test_empty_batch_runs_nothing(rig, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path)
    assert backend.infer(np.zeros((0, *CHW), np.float32)).shape == (0, EMBED_DIM)
    rig.context.execute_async_v3.assert_not_called()
    backend.close()


def test_close_releases_memory_and_stream(rig, cudart, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path)
    backend.infer(images(2))
    backend.synchronize()
    backend.close()
    backend.close()
    assert cudart.allocations == {} and cudart.streams == set()


def test_wrong_image_shape_is_refused(rig, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path)
    with pytest.raises(ModelError, match=r"does not fit the engine's \(N, 3, 28, 28\)"):
        backend.infer(np.zeros((2, 3, 32, 32), np.float32))
    backend.close()


def test_tensorrt_refusals_become_engine_errors(rig, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path)
    rig.context.execute_async_v3.side_effect = None
    rig.context.execute_async_v3.return_value = False
    with pytest.raises(EngineError, match="execute_async_v3 returned False"):
        backend.infer(images(1))
    rig.context.set_input_shape.side_effect = None
    rig.context.set_input_shape.return_value = False
    with pytest.raises(EngineError, match="refused input shape"):
        backend.infer(images(1))
    backend.close()


def test_non_float32_io_is_refused(rig, trt_real, cudart, onnx_file, tmp_path):
    rig.simulate_engine(1, 4, 4, dtype=trt_real.DataType.HALF)
    with pytest.raises(ModelError, match="not float32"):
        TensorRTBackend(onnx_file, max_batch=4, cache_dir=tmp_path / "cache")
    assert cudart.allocations == {} and cudart.streams == set()


def test_out_of_device_memory_is_a_clear_error(rig, cudart, onnx_file, tmp_path):
    cudart.fail["cudaMalloc"] = cudart.real.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(EngineError, match="cudaMalloc failed: cudaErrorMemoryAllocation") as exc:
        open_backend(rig, onnx_file, tmp_path)
    assert "--max-batch" in exc.value.hint
    assert cudart.streams == set()  # the stream made before the failure was destroyed


def test_explicit_engine_is_used_as_is(rig, onnx_file, tmp_path):
    from invspread_edge_runtime.tensorrt import build_engine

    info = build_engine(onnx_file, tmp_path / "model.engine", max_batch=4)
    backend = open_backend(rig, onnx_file, tmp_path, engine_path=info.engine_path)
    assert backend.loaded.status == "loaded" and backend.info.model_path == str(info.engine_path)
    assert rig.builder.build_serialized_network.call_count == 1
    backend.close()
