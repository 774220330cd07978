"""The engine cache key, the sidecar and the precision rules: plain logic, no TensorRT needed.

The TensorRT calls themselves are checked against the real APIs in test_tensorrt_api.py.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import pytest

from invspread_edge_runtime.errors import (
    ConfigError,
    EngineError,
    InvedgeError,
    MissingDependency,
    ModelError,
)
from invspread_edge_runtime.metadata import read_model_meta
from invspread_edge_runtime.tensorrt.build import resolve_precision
from invspread_edge_runtime.tensorrt.cache import (
    BatchProfile,
    EngineInfo,
    EngineKey,
    cached_engine_path,
    check_precision,
    default_cache_dir,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None

KEY = EngineKey(
    onnx_sha256="a" * 64,
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability="8.7",
    precision="int8",
    min_batch=1,
    opt_batch=32,
    max_batch=64,
)


def test_equal_keys_have_no_mismatch():
    assert KEY.mismatches(replace(KEY)) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"onnx_sha256": "b" * 64}, "another ONNX file"),
        ({"tensorrt_version": "11.4.0.106"}, "built with TensorRT 11.4.0.106, this is TensorRT 10.3.0"),
        ({"gpu_name": "NVIDIA H100"}, "built for NVIDIA H100 (sm 8.7), this GPU is Orin (sm 8.7)"),
        ({"compute_capability": "9.0"}, "built for Orin (sm 9.0)"),
        ({"precision": "fp16"}, "built for precision fp16, int8 wanted"),
        ({"max_batch": 128}, "batch profile 1/32/128, 1/32/64 wanted"),
    ],
)
def test_each_key_field_forces_a_rebuild_with_its_reason(change, reason):
    reasons = KEY.mismatches(replace(KEY, **change))
    assert len(reasons) == 1 and reason in reasons[0]


@pytest.mark.parametrize(("lo", "opt", "hi"), [(0, 1, 1), (2, 1, 4), (1, 8, 4)])
def test_invalid_batch_profiles_are_refused(lo, opt, hi):
    with pytest.raises(InvedgeError, match="min-batch <= --opt-batch <= --max-batch"):
        BatchProfile(lo, opt, hi)


def _info(path, **kw):
    return EngineInfo(
        engine_path=path, key=KEY, engine_sha256="e" * 64, engine_bytes=123, input_shape=(3, 28, 28), **kw
    )


def test_sidecar_round_trip_is_atomic(tmp_path):
    engine = tmp_path / "model.int8.engine"
    info = _info(engine, embedding_dim=32, workspace_mb=512)
    written = write_sidecar(info)
    assert written == sidecar_path(engine) == tmp_path / "model.int8.engine.json"
    assert read_sidecar(engine) == info
    doc = json.loads(written.read_text())
    assert doc["format"] == "invspread-edge-engine/1" and doc["key"]["gpu_name"] == "Orin"
    assert [p.name for p in tmp_path.iterdir()] == ["model.int8.engine.json"]  # no temporary left


def test_missing_sidecar_reads_as_none(tmp_path):
    assert read_sidecar(tmp_path / "x.engine") is None


@pytest.mark.parametrize(
    "content",
    [
        "{broken",
        '{"format": "something-else/1"}',
        '{"format": "invspread-edge-engine/1", "key": {"precision": "int8"}}',
    ],
)
def test_damaged_or_foreign_sidecar_is_an_engine_error(tmp_path, content):
    engine = tmp_path / "x.engine"
    sidecar_path(engine).write_text(content)
    with pytest.raises(EngineError):
        read_sidecar(engine)


def test_cache_slot_follows_model_precision_and_profile_not_device(tmp_path):
    onnx = tmp_path / "model.int8.onnx"
    base = cached_engine_path(tmp_path, onnx, KEY)
    assert base.name == "model.int8-aaaaaaaaaaaa-int8-b1-32-64.engine"
    for change in ({"onnx_sha256": "b" * 64}, {"precision": "fp16"}, {"opt_batch": 16}):
        assert cached_engine_path(tmp_path, onnx, replace(KEY, **change)) != base
    # a new TensorRT or GPU reuses the slot: the sidecar says the engine is stale and it is rebuilt
    assert cached_engine_path(tmp_path, onnx, replace(KEY, tensorrt_version="11.4", gpu_name="H100")) == base


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("INVEDGE_ENGINE_CACHE", str(tmp_path / "engines"))
    assert default_cache_dir() == tmp_path / "engines"
    monkeypatch.delenv("INVEDGE_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "invspread-edge" / "engines"


def test_precision_comes_from_the_graph(tmp_path, make_tiny_onnx):
    fp16 = read_model_meta(make_tiny_onnx(tmp_path / "model.fp16.onnx", precision="fp16"))
    assert resolve_precision(fp16, None, "model.fp16.onnx") == "fp16"
    assert resolve_precision(fp16, "fp16", "model.fp16.onnx") == "fp16"
    with pytest.raises(ConfigError, match="is a fp16 model") as exc:
        resolve_precision(fp16, "int8", "model.fp16.onnx")
    assert "model.int8.onnx" in exc.value.hint
    cpu = read_model_meta(make_tiny_onnx(tmp_path / "model.int8-cpu.onnx", precision="int8-cpu"))
    with pytest.raises(ModelError, match="CPU INT8 artifact"):
        resolve_precision(cpu, None, "model.int8-cpu.onnx")
    with pytest.raises(InvedgeError, match="Only fp32, fp16, int8"):
        check_precision("bf16")


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_build_says_how_to_install(tmp_path, make_tiny_onnx):
    from invspread_edge_runtime.tensorrt.build import build_engine

    onnx = make_tiny_onnx(tmp_path / "model.onnx")
    with pytest.raises(MissingDependency, match="'tensorrt'") as exc:
        build_engine(onnx, tmp_path / "model.engine", check=None)
    assert "pip install tensorrt" in exc.value.hint
    assert not (tmp_path / "model.engine").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_backend_is_a_missing_dependency(tmp_path, make_tiny_onnx):
    from invspread_edge_runtime.backends.trt import TensorRTBackend

    with pytest.raises(MissingDependency, match="'tensorrt'") as exc:
        TensorRTBackend(make_tiny_onnx(tmp_path / "model.onnx"), cache_dir=tmp_path, check=None)
    assert "pip install tensorrt" in exc.value.hint


class _CudaWithoutDriver:
    """cuda-python on a machine with no GPU or driver (torch's CUDA wheels bring it anywhere): every
    call answers cudaErrorInsufficientDriver."""

    class cudaError_t:
        cudaSuccess = 0

    def __getattr__(self, name):
        return lambda *args: (35,)


def _no_cuda_python():
    raise MissingDependency("cuda-python", "The native TensorRT backend (device memory and streams)")


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
@pytest.mark.parametrize(
    "cudart", [lambda: _CudaWithoutDriver(), _no_cuda_python], ids=["cuda-without-driver", "no-cuda-python"]
)
@pytest.mark.parametrize("entry", ["build_engine", "TensorRTBackend"])
def test_without_tensorrt_the_package_is_named_before_the_gpu(
    tmp_path, make_tiny_onnx, monkeypatch, cudart, entry
):
    """The build and the backend agree: without TensorRT, whatever CUDA looks like, the error says to
    install TensorRT (not "no usable NVIDIA GPU", nor cuda-python, which is not the missing piece)."""
    from invspread_edge_runtime.backends.trt import TensorRTBackend
    from invspread_edge_runtime.tensorrt import cuda
    from invspread_edge_runtime.tensorrt.build import build_engine

    monkeypatch.setattr(cuda, "import_cudart", cudart)
    onnx = make_tiny_onnx(tmp_path / "model.onnx")
    with pytest.raises(MissingDependency, match="'tensorrt'") as exc:
        if entry == "build_engine":
            build_engine(onnx, tmp_path / "model.engine", check=None)
        else:
            TensorRTBackend(onnx, cache_dir=tmp_path, check=None)
    assert "pip install tensorrt" in exc.value.hint
    assert not (tmp_path / "model.engine").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_build_engine_command_fails_in_one_line(tmp_path, make_tiny_onnx, capsys):
    from invspread_edge_runtime.cli import create_app, run

    onnx = make_tiny_onnx(tmp_path / "model.onnx")
    assert run(create_app(), ["build-engine", str(onnx), "--max-batch", "8"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "tensorrt" in err and "Traceback" not in err


def test_build_engine_command_checks_the_precision_before_tensorrt(tmp_path, make_tiny_onnx, capsys):
    from invspread_edge_runtime.cli import create_app, run

    onnx = make_tiny_onnx(tmp_path / "model.onnx")
    assert run(create_app(), ["build-engine", str(onnx), "--precision", "int8"]) == 1
    assert "model.int8.onnx" in capsys.readouterr().err


# --- an engine named explicitly, without its sidecar: refused unless trusted (no TensorRT needed) ---


@pytest.mark.parametrize("content", [b"a plan from somewhere", b"\x89PNG not even an engine"])
def test_engine_without_sidecar_is_refused_before_tensorrt_loads(tmp_path, monkeypatch, content):
    from invspread_edge_runtime.tensorrt import api, load

    imported = []
    monkeypatch.setattr(
        api, "import_tensorrt", lambda: imported.append(1) or pytest.fail("TensorRT was loaded")
    )
    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(content)
    with pytest.raises(EngineError, match="has no sidecar") as exc:
        load.load_engine(engine)
    message = str(exc.value)
    assert "\n" not in message and "untrusted source" in message and "code run on the GPU" in message
    assert "--trust-engine" in exc.value.hint and "invedge build-engine" in exc.value.hint
    assert imported == []


def test_trust_engine_reaches_the_loader(tmp_path, monkeypatch):
    """--trust-engine (Embedder/open_backend/TensorRTBackend trust_engine=True) lets an engine without a
    sidecar through to TensorRT; here TensorRT is absent, so the next error is the missing package."""
    from invspread_edge_runtime.tensorrt import api, load

    monkeypatch.setattr(
        api, "import_tensorrt", lambda: (_ for _ in ()).throw(MissingDependency("tensorrt", "x"))
    )
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(MissingDependency):
        load.load_engine(engine, trust_engine=True)


def test_trust_engine_option_is_shared():
    from invspread_edge_runtime.commands.options import TrustEngineOpt

    assert TrustEngineOpt.default is False and "--trust-engine" in TrustEngineOpt.param_decls


# --- `invedge build-engine` fed wrong files: one line, exit 1, the earlier engine untouched ----------


def _build_engine_cli(capsys, *argv):
    from invspread_edge_runtime.cli import create_app, run

    capsys.readouterr()
    code = run(create_app(), ["build-engine", *map(str, argv)])
    return code, capsys.readouterr().err.strip()


def _truncated(path, make_tiny_onnx):
    data = make_tiny_onnx(path).read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p, f: p.write_bytes(b"\x89PNG\r\n\x1a\n not a model"), "is not a readable ONNX file"),
        (lambda p, f: p.write_bytes(b""), "is not a readable ONNX file"),
        (_truncated, "is not a readable ONNX file"),
        (lambda p, f: p.write_text('{"a json": "file"}'), "is not a readable ONNX file"),
        (lambda p, f: None, "not found"),
        (lambda p, f: p.mkdir(), "model.onnx"),
        (lambda p, f: f(p, precision="int8-cpu"), "CPU INT8 artifact"),
    ],
    ids=["png", "empty", "truncated", "json", "missing", "folder", "int8-cpu"],
)
def test_build_engine_refuses_wrong_files_in_one_line(tmp_path, capsys, make_tiny_onnx, make, needle):
    model = tmp_path / "model.onnx"
    make(model, make_tiny_onnx)
    good = tmp_path / "good.engine"
    good.write_bytes(b"an engine built earlier")
    code, err = _build_engine_cli(capsys, model, "--out", good)
    assert code == 1, err
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert needle in err, err
    assert good.read_bytes() == b"an engine built earlier" and not sidecar_path(good).exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--min-batch", "0"], "--min-batch 0 is out of range. Use 1 to 1024"),
        (["--max-batch", "100000"], "--max-batch 100000 is out of range. Use 1 to 1024"),
        (["--min-batch", "8", "--max-batch", "4"], "invalid batch profile"),
        (["--workspace-mb", "0"], "--workspace-mb 0 is out of range"),
        (["--workspace-mb", "9999999999999"], "--workspace-mb 9999999999999 is out of range"),
        (["--precision", "int4"], "invalid precision 'int4'"),
    ],
)
def test_build_engine_refuses_bad_flags_before_any_output(tmp_path, capsys, make_tiny_onnx, flags, needle):
    model = make_tiny_onnx(tmp_path / "model.onnx")
    code, err = _build_engine_cli(capsys, model, *flags)
    assert code == 1 and err.startswith("error:") and "\n" not in err, err
    assert needle in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
