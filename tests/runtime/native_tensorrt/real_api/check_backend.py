"""TensorRTBackend against the real TensorRT and cuda-python APIs of one version (run per version
by tests/runtime/native_tensorrt/test_tensorrt_api.py). The engine and context are autospec doubles of the real classes; a
simulated engine reads its input from simulated device memory and writes x @ W back, so these tests
prove our call sequence (shapes, tensor addresses, execute_async_v3, copies, splitting, padding)
and data plumbing; they do not prove that TensorRT ran.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_rig import EMBED_DIM

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
        onnx_file,
        max_batch=max_batch,
        cache_dir=tmp_path / "cache",
        min_batch=min_batch,
        **kwargs,
        check=None,
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
        TensorRTBackend(onnx_file, max_batch=4, cache_dir=tmp_path / "cache", check=None)
    assert cudart.allocations == {} and cudart.streams == set()


def test_out_of_device_memory_is_a_clear_error(rig, cudart, onnx_file, tmp_path):
    cudart.fail["cudaMalloc"] = cudart.real.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(EngineError, match="cudaMalloc failed: cudaErrorMemoryAllocation") as exc:
        open_backend(rig, onnx_file, tmp_path)
    assert "--max-batch" in exc.value.hint
    assert cudart.streams == set()  # the stream made before the failure was destroyed


def test_engine_that_does_not_match_the_metadata_is_refused(rig, cudart, onnx_file, tmp_path):
    rig.engine_dim = 64  # an engine of another model: (N, 64) out, the ONNX metadata says 32
    with pytest.raises(
        ModelError, match=r"does not match its model's metadata: output is \(N, 64\), not \(N, 32\)"
    ):
        open_backend(rig, onnx_file, tmp_path)
    assert cudart.allocations == {} and cudart.streams == set()


def test_explicit_engine_without_sidecar_needs_trust(rig, onnx_file, tmp_path):
    from invspread_edge_runtime.tensorrt.build import build_engine
    from invspread_edge_runtime.tensorrt.cache import sidecar_path

    info = build_engine(onnx_file, tmp_path / "model.engine", max_batch=4, check=None)
    sidecar_path(info.engine_path).unlink()
    with pytest.raises(EngineError, match="no sidecar"):
        open_backend(rig, onnx_file, tmp_path, engine_path=info.engine_path)
    backend = open_backend(rig, onnx_file, tmp_path, engine_path=info.engine_path, trust_engine=True)
    assert backend.loaded.status == "loaded" and backend.loaded.info is None
    backend.close()


def test_explicit_engine_is_used_as_is(rig, onnx_file, tmp_path):
    from invspread_edge_runtime.tensorrt.build import build_engine

    info = build_engine(onnx_file, tmp_path / "model.engine", max_batch=4, check=None)
    backend = open_backend(rig, onnx_file, tmp_path, engine_path=info.engine_path)
    assert backend.loaded.status == "loaded" and backend.info.model_path == str(info.engine_path)
    assert rig.builder.build_serialized_network.call_count == 1
    backend.close()


def test_embedder_on_an_explicit_engine_preprocesses_from_the_onnx_metadata(rig, onnx_file, tmp_path):
    """`Embedder(TensorRTBackend(onnx, engine_path=...))`: the model's metadata is the ONNX file's
    (read once, `backend.meta`), never read from `info.model_path`, which is the engine file."""
    from PIL import Image

    from invspread_edge_runtime.embedder import Embedder
    from invspread_edge_runtime.metadata import read_model_meta
    from invspread_edge_runtime.preprocess import normalize, to_uint8_chw
    from invspread_edge_runtime.tensorrt.build import build_engine

    info = build_engine(onnx_file, tmp_path / "model.engine", max_batch=4, check=None)
    meta = read_model_meta(onnx_file)
    picture = Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 36, 3), dtype=np.uint8))
    with Embedder(open_backend(rig, onnx_file, tmp_path, engine_path=info.engine_path)) as embedder:
        assert embedder.info.model_path == str(info.engine_path)
        assert embedder.meta == meta == embedder.backend.meta
        vectors = embedder.embed([picture, picture])
    x = normalize(to_uint8_chw(picture, meta.image_size)[None], meta.mean, meta.std)
    expected = rig.reference(x)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, np.repeat(expected, 2, axis=0), rtol=1e-5, atol=1e-5)


# --- device time: CUDA events around execute_async_v3 -----------------------------------------------


def stream_work(cudart):
    """The simulated timeline with event handles named by their creation order (start, stop)."""
    recorded = [int(args[0]) for name, args in cudart.calls if name == "cudaEventRecord"]
    names = dict(zip(dict.fromkeys(recorded), ("start", "stop"), strict=True))
    return [(what, names.get(obj, obj), stream) for what, obj, stream in cudart.timeline]


def test_events_bracket_execute_on_the_backend_stream(rig, cudart, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path)
    assert backend.last_device_ms() is None  # nothing ran yet
    assert [name for name, _ in cudart.calls].count("cudaEventCreate") == 2 and len(cudart.events) == 2
    backend.infer(images(3))
    s = int(backend._stream)
    assert stream_work(cudart) == [
        ("copy", "cudaMemcpyHostToDevice", s),
        ("record", "start", s),
        ("launch", "execute_async_v3", s),
        ("record", "stop", s),
        ("copy", "cudaMemcpyDeviceToHost", s),
    ]
    # the copies took copy_ms each on the simulated clock: none of it is in the device time
    assert backend.last_device_ms() == pytest.approx(rig.execute_ms(3))
    names = [name for name, _ in cudart.calls]
    assert names.index("cudaEventSynchronize") < names.index("cudaEventElapsedTime")
    backend.close()


def test_device_time_is_summed_over_split_chunks_of_the_last_call(rig, cudart, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path, max_batch=4)
    backend.infer(images(10))
    assert rig.executions == [4, 4, 2]
    assert backend.last_device_ms() == pytest.approx(sum(map(rig.execute_ms, [4, 4, 2])))
    records = [what for what, *_ in stream_work(cudart) if what in ("record", "launch")]
    assert records == ["record", "launch", "record"] * 3
    assert len([n for n, _ in cudart.calls if n == "cudaEventElapsedTime"]) == 3
    backend.infer(images(2))  # the last call only, not a running total
    assert backend.last_device_ms() == pytest.approx(rig.execute_ms(2))
    assert backend.infer(np.zeros((0, *CHW), np.float32)).shape == (0, EMBED_DIM)
    assert backend.last_device_ms() == 0.0  # nothing ran, no device time
    backend.close()


def test_padded_chunks_time_what_ran(rig, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path, min_batch=2, max_batch=4)
    backend.infer(images(5))
    assert rig.executions == [4, 2]  # the single row ran padded to the profile's minimum
    assert backend.last_device_ms() == pytest.approx(rig.execute_ms(4) + rig.execute_ms(2))
    backend.close()


def test_a_failed_call_leaves_no_device_time(rig, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path)
    backend.infer(images(2))
    assert backend.last_device_ms() is not None
    rig.context.execute_async_v3.side_effect = None
    rig.context.execute_async_v3.return_value = False
    with pytest.raises(EngineError):
        backend.infer(images(2))
    assert backend.last_device_ms() is None
    backend.close()


def test_close_destroys_the_events(rig, cudart, onnx_file, tmp_path):
    backend = open_backend(rig, onnx_file, tmp_path)
    backend.infer(images(2))
    created = {int(args[0]) for name, args in cudart.calls if name == "cudaEventRecord"}
    backend.close()
    backend.close()
    destroyed = [int(args[0]) for name, args in cudart.calls if name == "cudaEventDestroy"]
    assert sorted(destroyed) == sorted(created) and cudart.events == {}
    assert cudart.allocations == {} and cudart.streams == set()


def test_event_failure_at_setup_releases_everything(rig, cudart, onnx_file, tmp_path):
    cudart.fail["cudaEventCreate"] = cudart.real.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(EngineError, match="cudaEventCreate failed"):
        open_backend(rig, onnx_file, tmp_path)
    assert cudart.events == {} and cudart.streams == set() and cudart.allocations == {}


def test_bench_rows_of_the_backend_get_cuda_event_device_times(rig, onnx_file, tmp_path):
    """`invedge bench` on this backend: device_* come from its events, labelled so, none from IO binding."""
    from invspread_edge_runtime.bench.harness import TimingPlan
    from invspread_edge_runtime.bench.images import load_bench_images
    from invspread_edge_runtime.bench.registry import register_runtime, unregister_runtime
    from invspread_edge_runtime.bench.runner import BenchSettings, run_bench
    from invspread_edge_runtime.bench.target import resolve_target

    def open_trt(target, precision, options):
        return open_backend(rig, onnx_file, tmp_path, max_batch=options.max_batch)

    register_runtime("trt-simulated", open_trt)
    try:
        settings = BenchSettings(
            runtimes=["trt-simulated"],
            batches=[3],
            plan=TimingPlan(1, 0.0, 4, None),
            threads=1,
            accuracy=False,
        )
        (row,) = run_bench(resolve_target(onnx_file), load_bench_images("fashion-mnist", 8), settings).rows
    finally:
        unregister_runtime("trt-simulated")
    assert row.status == "ok", row.error
    assert row.device_timing == "CUDA events"
    assert row.device_p50_ms == pytest.approx(rig.execute_ms(3))
    assert row.device_p99_ms == pytest.approx(rig.execute_ms(3))
