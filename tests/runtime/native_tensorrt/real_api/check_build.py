"""Engine build, cache and load against the real TensorRT API of one version (run per version by
tests/runtime/native_tensorrt/test_tensorrt_api.py). Proves API conformance and the call sequence of OUR code; TensorRT's
GPU-bound classes are autospec doubles of the real ones, so no engine is built or run here.
"""

from __future__ import annotations

import json

import pytest
from engine_rig import PLAN, TIMING

from invspread_edge_runtime.errors import ConfigError, EngineError, ModelError
from invspread_edge_runtime.files import sha256_bytes, sha256_file
from invspread_edge_runtime.tensorrt import api as trt_api
from invspread_edge_runtime.tensorrt.build import build_engine
from invspread_edge_runtime.tensorrt.cache import read_sidecar, sidecar_path
from invspread_edge_runtime.tensorrt.cuda import CudaRuntime
from invspread_edge_runtime.tensorrt.load import get_or_build_engine, load_engine


@pytest.fixture
def onnx_file(tmp_path, make_tiny_onnx):
    return make_tiny_onnx(tmp_path / "export" / "model.onnx")


def expected_network_flags(trt, major: int) -> int:
    """Written from the release notes, not from our code: 10.x must ask for strong typing, 11.x always is."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if major == 10 else 0


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_engine_call_sequence(rig, trt_real, version_major, tmp_path, make_tiny_onnx, precision):
    onnx = make_tiny_onnx(tmp_path / f"model.{precision}.onnx", precision=precision)
    timing = tmp_path / "timing.cache"
    out = tmp_path / "engines" / "model.engine"

    info = build_engine(
        onnx,
        out,
        precision,
        min_batch=1,
        opt_batch=8,
        max_batch=16,
        workspace_mb=256,
        timing_cache=timing,
        check=None,
    )

    rig.builder.create_network.assert_called_once_with(expected_network_flags(trt_real, version_major))
    rig.parser.parse_from_file.assert_called_once_with(str(onnx))
    rig.config.set_flag.assert_not_called()  # precision lives in the graph: no precision flag, no calibrator
    rig.config.set_memory_pool_limit.assert_called_once_with(trt_real.MemoryPoolType.WORKSPACE, 256 << 20)
    rig.profile.set_shape.assert_called_once_with("images", (1, 3, 28, 28), (8, 3, 28, 28), (16, 3, 28, 28))
    rig.config.add_optimization_profile.assert_called_once_with(rig.profile)
    rig.config.create_timing_cache.assert_called_once_with(b"")
    rig.config.set_timing_cache.assert_called_once_with(rig.timing_cache, False)
    rig.builder.build_serialized_network.assert_called_once_with(rig.network, rig.config)
    assert rig.order == ["parse", "build"]

    assert out.read_bytes() == PLAN
    assert timing.read_bytes() == TIMING
    assert read_sidecar(out) == info
    key = info.key
    assert key.tensorrt_version == trt_real.__version__
    assert (key.gpu_name, key.compute_capability) == ("NVIDIA Orin (simulated)", "8.7")
    assert (key.precision, key.min_batch, key.opt_batch, key.max_batch) == (precision, 1, 8, 16)
    assert key.onnx_sha256 == sha256_file(onnx)
    assert info.engine_sha256 == sha256_bytes(PLAN) and info.engine_bytes == len(PLAN)
    assert info.input_shape == (3, 28, 28) and info.embedding_dim == 32
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.engine",
        "model.engine.json",
    ]  # no temp files


def test_strong_typing_is_feature_detected(trt_real, version_major):
    """The branch our code takes is decided by the API itself: 10.x still has weak typing's flags."""
    assert trt_api.has_weak_typing(trt_real) is (version_major == 10)
    assert trt_api.network_flags(trt_real) == expected_network_flags(trt_real, version_major)
    assert hasattr(trt_real.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def test_opt_batch_defaults_to_max(rig, onnx_file, tmp_path):
    build_engine(onnx_file, tmp_path / "m.engine", max_batch=32, check=None)
    rig.profile.set_shape.assert_called_once_with("images", (1, 3, 28, 28), (32, 3, 28, 28), (32, 3, 28, 28))
    rig.config.set_timing_cache.assert_not_called()  # no timing cache asked for


def test_parser_errors_are_reported(rig, api, onnx_file, tmp_path):
    rig.parser.parse_from_file.side_effect = None
    rig.parser.parse_from_file.return_value = False
    api.set_property(rig.parser, "num_errors", 1)
    error = api.double("ParserError")
    error.node_name.return_value = "DequantizeLinear_7"
    error.node.return_value = 7
    error.node_operator.return_value = "DequantizeLinear"
    error.desc.return_value = "zero point must be 0"
    rig.parser.get_error.return_value = error

    with pytest.raises(EngineError, match=r"DequantizeLinear_7 \(DequantizeLinear\): zero point must be 0"):
        build_engine(onnx_file, tmp_path / "m.engine", check=None)
    rig.parser.get_error.assert_called_once_with(0)
    rig.builder.build_serialized_network.assert_not_called()
    assert not (tmp_path / "m.engine").exists()


def test_failed_build_writes_nothing(rig, onnx_file, tmp_path):
    rig.builder.build_serialized_network.side_effect = None
    rig.builder.build_serialized_network.return_value = None  # what TensorRT returns on failure
    with pytest.raises(EngineError, match="could not build"):
        build_engine(onnx_file, tmp_path / "m.engine", check=None)
    assert list(tmp_path.glob("m.engine*")) == []


def test_real_builder_without_gpu_is_a_clear_error(rig, monkeypatch, onnx_file, tmp_path):
    """The real Builder class: its factory returns null here (stub library), as it does without a GPU."""
    rig.install(monkeypatch, builder=False)
    with pytest.raises(EngineError, match="could not create a builder"):
        build_engine(onnx_file, tmp_path / "m.engine", check=None)


def test_timing_cache_from_another_gpu_is_replaced(rig, onnx_file, tmp_path, capsys):
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"old-cache")
    rig.config.set_timing_cache.side_effect = [False, True]  # TensorRT refuses a cache from another device
    build_engine(onnx_file, tmp_path / "m.engine", timing_cache=timing, check=None)
    assert [c.args[0] for c in rig.config.create_timing_cache.call_args_list] == [b"old-cache", b""]
    assert "another GPU" in capsys.readouterr().err
    assert timing.read_bytes() == TIMING


def test_precision_must_match_the_graph(rig, api, onnx_file, tmp_path, make_tiny_onnx):
    with pytest.raises(ConfigError, match=r"fp32 model.*model\.int8\.onnx"):
        build_engine(onnx_file, tmp_path / "m.engine", precision="int8", check=None)
    cpu = make_tiny_onnx(tmp_path / "model.int8-cpu.onnx", precision="int8-cpu")
    with pytest.raises(ModelError, match="CPU INT8 artifact"):
        build_engine(cpu, tmp_path / "m.engine", check=None)
    rig.builder.create_network.assert_not_called()


# --- the engine cache: reuse, rebuild on a key mismatch or a failed deserialisation -----------------


def test_cache_builds_once_then_reuses(rig, onnx_file, tmp_path):
    first = get_or_build_engine(onnx_file, tmp_path / "cache", max_batch=16, check=None)
    second = get_or_build_engine(onnx_file, tmp_path / "cache", max_batch=16, check=None)
    assert (first.status, second.status) == ("built", "cached")
    assert rig.builder.build_serialized_network.call_count == 1
    assert second.engine is rig.engine and second.info == first.info
    assert [c.args for c in rig.runtime.deserialize_cuda_engine.call_args_list] == [(PLAN,), (PLAN,)]
    assert len(list((tmp_path / "cache").glob("timing-*.cache"))) == 1


def _stale_gpu(rig, path):
    rig.cudart.gpu_name = "NVIDIA H100 80GB HBM3 (simulated)"
    return "this GPU is NVIDIA H100"


def _stale_tensorrt(rig, path):
    doc = json.loads(sidecar_path(path).read_text())
    doc["key"]["tensorrt_version"] = "10.0.0.6"
    sidecar_path(path).write_text(json.dumps(doc))
    return "built with TensorRT 10.0.0.6"


def _deserialise_none(rig, path):
    rig.runtime.deserialize_cuda_engine.side_effect = [None, rig.engine]
    return "could not deserialise"


def _deserialise_raises(rig, path):
    rig.runtime.deserialize_cuda_engine.side_effect = [
        RuntimeError("Serialization assertion failed"),
        rig.engine,
    ]
    return "could not deserialise"


def _engine_damaged(rig, path):
    path.write_bytes(PLAN[:-3])
    return "does not match its sidecar"


def _sidecar_missing(rig, path):
    sidecar_path(path).unlink()
    return "no sidecar"


def _sidecar_damaged(rig, path):
    sidecar_path(path).write_text("{not json")
    return "sidecar is unreadable"


@pytest.mark.parametrize(
    "make_stale",
    [
        _stale_gpu,
        _stale_tensorrt,
        _deserialise_none,
        _deserialise_raises,
        _engine_damaged,
        _sidecar_missing,
        _sidecar_damaged,
    ],
)
def test_cache_rebuilds_when_stale(rig, onnx_file, tmp_path, capsys, make_stale):
    first = get_or_build_engine(onnx_file, tmp_path / "cache", max_batch=16, check=None)
    reason = make_stale(rig, first.info.engine_path)
    again = get_or_build_engine(onnx_file, tmp_path / "cache", max_batch=16, check=None)
    assert again.status == "rebuilt"
    assert rig.builder.build_serialized_network.call_count == 2
    assert reason in capsys.readouterr().err
    assert read_sidecar(again.info.engine_path) == again.info


# --- an engine named explicitly (`--engine FILE`): checked, never rebuilt -----------------------------


def test_explicit_engine_loads_when_it_matches(rig, onnx_file, tmp_path):
    info = build_engine(onnx_file, tmp_path / "m.engine", check=None)
    loaded = load_engine(info.engine_path, onnx_path=onnx_file)
    assert loaded.status == "loaded" and loaded.engine is rig.engine and loaded.info == info


@pytest.mark.parametrize(
    ("make_stale", "message"),
    [
        (_stale_gpu, "cannot be used here: built for NVIDIA Orin .* this GPU is NVIDIA H100"),
        (_stale_tensorrt, "cannot be used here: built with TensorRT 10.0.0.6"),
        (_engine_damaged, "does not match its sidecar"),
        (_deserialise_none, "could not deserialise"),
    ],
)
def test_explicit_engine_refused_with_reason(rig, onnx_file, tmp_path, make_stale, message):
    info = build_engine(onnx_file, tmp_path / "m.engine", check=None)
    make_stale(rig, info.engine_path)
    with pytest.raises(EngineError, match=message) as exc:
        load_engine(info.engine_path, onnx_path=onnx_file)
    assert "invedge build-engine" in exc.value.hint
    assert rig.builder.build_serialized_network.call_count == 1  # never rebuilt


def test_explicit_engine_from_other_onnx_refused(rig, onnx_file, tmp_path, make_tiny_onnx):
    info = build_engine(onnx_file, tmp_path / "m.engine", check=None)
    other = make_tiny_onnx(tmp_path / "other.onnx", embedding_dim=16)
    with pytest.raises(EngineError, match="another ONNX file"):
        load_engine(info.engine_path, onnx_path=other)


def test_explicit_engine_without_sidecar_is_refused_unless_trusted(rig, onnx_file, tmp_path, capsys):
    info = build_engine(onnx_file, tmp_path / "m.engine", check=None)
    sidecar_path(info.engine_path).unlink()
    with pytest.raises(EngineError, match=r"no sidecar .*untrusted source") as exc:
        load_engine(info.engine_path)
    assert "--trust-engine" in exc.value.hint
    rig.runtime.deserialize_cuda_engine.assert_not_called()  # refused before TensorRT saw a byte
    loaded = load_engine(info.engine_path, trust_engine=True)
    assert loaded.info is None and "loaded because of --trust-engine" in capsys.readouterr().err
    rig.runtime.deserialize_cuda_engine.assert_called_once()


@pytest.mark.parametrize(
    ("tensor", "name", "shape", "message"),
    [
        ("output", "embeddings", (-1, 64), r"output shape \(-1, 64\) does not match \(N, 32\)"),
        ("output", "features", (-1, 32), "output is named 'features'"),
        ("input", "images", (-1, 1, 28, 28), r"input shape \(-1, 1, 28, 28\) does not match"),
        ("input", "images", (-1, 3, 32, 32), r"input shape \(-1, 3, 32, 32\) does not match"),
    ],
)
def test_graph_that_does_not_match_its_metadata_is_refused(
    rig, onnx_file, tmp_path, tensor, name, shape, message
):
    double = rig.output_tensor if tensor == "output" else rig.input_tensor
    rig.api.set_property(double, "name", name)
    rig.api.set_property(double, "shape", rig.trt.Dims(shape))
    with pytest.raises(ModelError, match=message):
        build_engine(onnx_file, tmp_path / "m.engine", check=None)
    rig.builder.build_serialized_network.assert_not_called()
    assert not (tmp_path / "m.engine").exists()


def test_real_cuda_runtime_identity(trt_real):
    """The real cuda-python module (no double): without a driver the error is an EngineError, not a traceback."""
    from cuda.bindings import runtime as real

    cuda = CudaRuntime(real)
    err = real.cudaGetDeviceCount()[0]
    if err == real.cudaError_t.cudaSuccess:
        assert cuda.gpu().compute_capability
    else:
        with pytest.raises(EngineError, match=err.name):
            cuda.gpu()
