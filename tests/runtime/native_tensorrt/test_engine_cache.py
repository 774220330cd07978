"""The engine cache key, the sidecar and the precision rules: plain logic, no TensorRT needed.

The TensorRT calls themselves are checked against the real APIs in test_tensorrt_api.py.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

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
        ({"dla_core": 1}, "built for DLA core 1, GPU wanted"),
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


# --- DLA: the key, the sidecar, the cache slot and the settings a DLA build refuses ----------------


@pytest.mark.parametrize(
    ("wanted", "built", "reason"),
    [
        (0, None, "built for GPU, DLA core 0 wanted"),
        (0, 1, "built for DLA core 1, DLA core 0 wanted"),
        (None, 0, "built for DLA core 0, GPU wanted"),
    ],
)
def test_dla_core_is_part_of_the_key(wanted, built, reason):
    assert replace(KEY, dla_core=wanted).mismatches(replace(KEY, dla_core=built)) == [reason]
    assert replace(KEY, dla_core=wanted).mismatches(replace(KEY, dla_core=wanted)) == []


def test_gpu_sidecar_has_no_dla_core_so_older_runtimes_read_it(tmp_path):
    """A GPU engine's key is written without `dla_core` (a runtime from before DLA builds refuses
    unknown key fields); a sidecar without it reads as a GPU engine; a DLA engine's names its core."""
    engine = tmp_path / "model.int8.engine"
    write_sidecar(_info(engine))
    doc = json.loads(sidecar_path(engine).read_text())
    assert "dla_core" not in doc["key"]
    assert sorted(doc["key"]) == sorted(f for f in EngineKey.__dataclass_fields__ if f != "dla_core")
    info = read_sidecar(engine)
    assert info.key.dla_core is None and info.key.device == "GPU" and info.key == KEY
    write_sidecar(replace(_info(engine), key=replace(KEY, dla_core=1)))
    assert json.loads(sidecar_path(engine).read_text())["key"]["dla_core"] == 1
    assert read_sidecar(engine).key.device == "DLA core 1"


def test_dla_sidecar_round_trip(tmp_path):
    engine = tmp_path / "model.int8.engine"
    dla = {"core": 1, "layers": 12, "not_dla_capable": ["resize (RESIZE)"]}
    info = EngineInfo(
        engine_path=engine,
        key=replace(KEY, dla_core=1),
        engine_sha256="e" * 64,
        engine_bytes=1,
        extra={"dla": dla},
    )
    write_sidecar(info)
    back = read_sidecar(engine)
    assert back == info and back.key.dla_core == 1 and back.extra["dla"] == dla


def test_cache_slot_names_the_dla_core(tmp_path):
    onnx = tmp_path / "model.int8.onnx"
    gpu = cached_engine_path(tmp_path, onnx, KEY)
    slots = {cached_engine_path(tmp_path, onnx, replace(KEY, dla_core=n)).name for n in (0, 1)}
    assert slots == {
        "model.int8-aaaaaaaaaaaa-int8-b1-32-64-dla0.engine",
        "model.int8-aaaaaaaaaaaa-int8-b1-32-64-dla1.engine",
    }
    assert gpu.name not in slots


@pytest.mark.parametrize(
    ("settings", "profile"),
    [
        ({"max_batch": 8}, BatchProfile(8, 8, 8)),  # --max-batch alone fixes the batch
        ({"min_batch": 4, "opt_batch": 4, "max_batch": 4}, BatchProfile(4, 4, 4)),
        ({"min_batch": 8, "max_batch": 8}, BatchProfile(8, 8, 8)),
        ({"opt_batch": 8, "max_batch": 8}, BatchProfile(8, 8, 8)),
    ],
)
def test_dla_build_fixes_the_batch(settings, profile):
    from invspread_edge_runtime.tensorrt.build import check_profile

    assert check_profile(**settings, dla_core=0) == profile
    assert check_profile(max_batch=8) == BatchProfile(1, 8, 8)  # the GPU keeps its dynamic range


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"min_batch": 2, "max_batch": 8}, "--min-batch 2 differs from --max-batch 8"),
        ({"opt_batch": 4, "max_batch": 8}, "--opt-batch 4 differs from --max-batch 8"),
        ({"min_batch": 8, "opt_batch": 4, "max_batch": 8}, "--opt-batch 4 differs from --max-batch 8"),
    ],
)
def test_dla_build_refuses_a_batch_range_naming_the_flag(settings, needle):
    """A typed --min-batch/--opt-batch is refused, never silently changed."""
    from invspread_edge_runtime.tensorrt.build import check_profile

    with pytest.raises(ConfigError, match="--dla needs a fixed batch: " + needle) as exc:
        check_profile(**settings, dla_core=0)
    assert exc.value.hint.startswith("Leave out " + needle.split()[0])


def test_dla_core_range_is_zero_or_one():
    from invspread_edge_runtime.tensorrt.build import check_profile

    assert check_profile(dla_core=1) == BatchProfile(64, 64, 64)
    with pytest.raises(ConfigError, match=r"--dla 2 is out of range\. Use 0 to 1"):
        check_profile(dla_core=2)


def test_dla_refuses_an_fp32_graph(tmp_path, make_tiny_onnx):
    from invspread_edge_runtime.tensorrt.build import check_settings

    fp32 = read_model_meta(make_tiny_onnx(tmp_path / "model.onnx"))
    with pytest.raises(ConfigError, match="is an fp32 model; the DLA runs FP16 and INT8 only") as exc:
        check_settings(fp32, "model.onnx", dla_core=0)
    assert "model.fp16.onnx" in exc.value.hint and "model.int8.onnx" in exc.value.hint
    fp16 = read_model_meta(make_tiny_onnx(tmp_path / "model.fp16.onnx", precision="fp16"))
    assert check_settings(fp16, "model.fp16.onnx", max_batch=4, dla_core=0) == ("fp16", BatchProfile(4, 4, 4))


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--dla", "0"], "is an fp32 model; the DLA runs FP16 and INT8 only. Build from model.fp16.onnx"),
        (["--dla", "9"], "--dla 9 is out of range. Use 0 to 1"),
        (["--dla", "-1"], "--dla -1 is out of range. Use 0 to 1"),
    ],
)
def test_build_engine_dla_flags_fail_in_one_line(tmp_path, capsys, make_tiny_onnx, flags, needle):
    model = make_tiny_onnx(tmp_path / "model.onnx")
    code, err = _build_engine_cli(capsys, model, *flags)
    assert code == 1 and err.startswith("error:") and "\n" not in err, err
    assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_build_engine_dla_needs_a_fixed_batch(tmp_path, capsys, make_tiny_onnx):
    model = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    code, err = _build_engine_cli(capsys, model, "--dla", "0", "--min-batch", "2", "--max-batch", "8")
    assert code == 1 and "--dla needs a fixed batch" in err and "\n" not in err, err


def test_build_engine_dla_needs_a_fixed_batch_naming_the_typed_flag(tmp_path, capsys, make_tiny_onnx):
    model = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    code, err = _build_engine_cli(capsys, model, "--dla", "0", "--opt-batch", "4", "--max-batch", "8")
    assert code == 1 and "--opt-batch 4 differs from --max-batch 8" in err and "\n" not in err, err


# --- the device's DLA: asked of TensorRT before any build work, and again at load ------------------


def _tensorrt_with_dla(monkeypatch, cores: int, max_batch: int = 4096):
    """A stand-in `tensorrt` whose Builder and Runtime report `cores` DLA cores (no GPU needed)."""
    from types import SimpleNamespace

    from invspread_edge_runtime.tensorrt import api

    class Logger:
        WARNING, VERBOSE = 2, 4

        def __init__(self, severity: int) -> None:
            self.severity = severity

    builder = SimpleNamespace(num_DLA_cores=cores, max_DLA_batch_size=max_batch)
    trt = SimpleNamespace(
        Logger=Logger,
        Builder=lambda logger: builder,
        Runtime=lambda logger: SimpleNamespace(num_DLA_cores=cores, DLA_core=-1),
    )
    monkeypatch.setattr(api, "import_tensorrt", lambda: trt)
    return trt


@pytest.mark.parametrize(
    ("cores", "core", "max_batch", "message", "hint"),
    [
        (0, 0, 8, "this GPU has no DLA (DLA cores: 0)", "Build without --dla"),
        (1, 1, 8, "--dla 1: this device has 1 DLA core", "Use --dla 0"),
        (
            2,
            1,
            8192,
            "--max-batch 8192: this device's DLA takes batches of at most 4096",
            "Use --max-batch 4096",
        ),
    ],
)
def test_check_dla_core_is_one_line(monkeypatch, cores, core, max_batch, message, hint):
    from invspread_edge_runtime.tensorrt import api

    trt = _tensorrt_with_dla(monkeypatch, cores)
    with pytest.raises(EngineError) as exc:
        api.check_dla_core(trt, core, max_batch)
    assert exc.value.message == message and exc.value.hint.startswith(hint)
    api.check_dla_core(_tensorrt_with_dla(monkeypatch, 2), 1, 4096)  # a device with both cores


def test_dla_engine_on_a_device_without_its_core_is_refused_at_load(monkeypatch):
    """A DLA-1 engine on an Orin with one DLA core: one line before TensorRT sees the plan."""
    from invspread_edge_runtime.tensorrt import api

    trt = _tensorrt_with_dla(monkeypatch, 1)
    with pytest.raises(EngineError, match="the engine runs on DLA core 1; this device has 1 DLA core") as exc:
        api.make_runtime(trt, 1)
    assert "--dla 0" in exc.value.hint
    assert api.make_runtime(trt, 0).DLA_core == 0
    assert api.make_runtime(trt, None).DLA_core == -1  # a GPU engine: the runtime's default


def test_build_engine_dla_without_a_dla_fails_before_building(tmp_path, capsys, monkeypatch, make_tiny_onnx):
    _tensorrt_with_dla(monkeypatch, 0)
    model = make_tiny_onnx(tmp_path / "model.int8.onnx", precision="int8")
    code, err = _build_engine_cli(capsys, model, "--dla", "0", "--max-batch", "8")
    assert code == 1 and err == "error: this GPU has no DLA (DLA cores: 0). Build without --dla", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]


# --- `invedge build-engine` on an export folder: the artifact TensorRT should build from -----------


def _stand_in_build(monkeypatch) -> list[tuple[Path, Path, int | None]]:
    """Replace the TensorRT build: record the ONNX file, engine path and DLA core the command chose,
    then stop with one line (nothing is written)."""
    from invspread_edge_runtime.tensorrt import build

    built: list[tuple[Path, Path, int | None]] = []

    def build_engine(model, engine, *settings, dla_core=None, **kwargs):
        built.append((Path(model), Path(engine), dla_core))
        raise EngineError("stand-in build")

    monkeypatch.setattr(build, "build_engine", build_engine)
    return built


@pytest.mark.parametrize(
    ("flags", "artifact", "dla"),
    [
        ([], "model.int8.onnx", None),  # TensorRT's preference: int8 > fp16 > fp32, never int8-cpu
        (["--precision", "fp16"], "model.fp16.onnx", None),
        (["--precision", "fp32"], "model.onnx", None),
        (["--precision", "int8", "--dla", "0", "--max-batch", "8"], "model.int8.onnx", 0),
        (["--dla", "1", "--max-batch", "8"], "model.int8.onnx", 1),
    ],
)
def test_build_engine_on_an_export_folder_builds_the_chosen_artifact(
    tiny_export, capsys, monkeypatch, flags, artifact, dla
):
    from invspread_edge_runtime.tensorrt.build import engine_path_for

    _tensorrt_with_dla(monkeypatch, 2)
    built = _stand_in_build(monkeypatch)
    code, err = _build_engine_cli(capsys, tiny_export, *flags)
    assert code == 1 and err.endswith("error: stand-in build"), err
    assert f"building a TensorRT engine from {tiny_export / artifact} " in err
    assert built == [(tiny_export / artifact, engine_path_for(tiny_export / artifact), dla)]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ([], None),  # fp32 is the one TensorRT artifact: int8-cpu is never chosen
        (["--precision", "int8-cpu"], "the int8-cpu model (uint8 activations) cannot run on TensorRT"),
        (["--precision", "int8"], "(found: fp32, int8-cpu)"),
        (["--precision", "fp8"], "invalid precision 'fp8'"),
        (["--dla", "0", "--max-batch", "8"], "is an fp32 model; the DLA runs FP16 and INT8 only"),
    ],
)
def test_build_engine_on_a_folder_without_the_artifact_is_one_line(
    tmp_path, capsys, monkeypatch, make_tiny_onnx, flags, needle
):
    export = tmp_path / "export"
    make_tiny_onnx(export / "model.onnx")
    make_tiny_onnx(export / "model.int8-cpu.onnx", precision="int8-cpu")
    built = _stand_in_build(monkeypatch)
    code, err = _build_engine_cli(capsys, export, *flags)
    assert code == 1, err
    if needle is None:
        assert err.endswith("error: stand-in build") and [m.name for m, _, _ in built] == ["model.onnx"]
    else:
        assert err.startswith("error:") and "\n" not in err and needle in err and built == [], err
    assert sorted(p.name for p in export.iterdir()) == ["model.int8-cpu.onnx", "model.onnx"]
