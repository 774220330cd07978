"""`invedge deploy triton`'s repository: every config.pbtxt parsed with Triton's own ModelConfig protobuf
and checked against the ONNX graph it points to; the staging, the refusals, the TensorRT plan path
(against a stand-in for build_engine: TensorRT does not run here) and the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from triton_testing import require

from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.deploy.triton import TritonEngine, base_name, write_repository
from invspread_edge_runtime.errors import ConfigError, EngineError, InvedgeError, ModelError
from invspread_edge_runtime.metadata import ModelMeta, read_model_meta

text_format = require("google.protobuf.text_format")
model_config_pb2 = require("tritonclient.grpc.model_config_pb2")
onnx = require("onnx")

ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16"}  # onnx.TensorProto elem_type → Triton's data type


def parse(folder: Path):
    """The model's config.pbtxt as Triton reads it (text format of inference.ModelConfig)."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def dtype(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def meta_of(config) -> ModelMeta:
    props = {key: p.string_value for key, p in config.parameters.items()}
    return ModelMeta.from_props(props, source=config.name)


def graph_io(path: Path) -> tuple[list[tuple[str, str, list]], list[tuple[str, str, list]]]:
    """(name, Triton type, dims without the batch) of the ONNX graph's inputs and outputs."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def rows(values):
        out = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            out.append((value.name, ONNX_TYPES[tensor.elem_type], dims[1:]))
        return out

    initializers = {init.name for init in graph.initializer}
    return rows([v for v in graph.input if v.name not in initializers]), rows(graph.output)


def config_io(config) -> tuple[list[tuple[str, str, list]], list[tuple[str, str, list]]]:
    def rows(items):
        return [(t.name, dtype(t.data_type), list(t.dims)) for t in items]

    return rows(config.input), rows(config.output)


@pytest.fixture(scope="module")
def gpu_repo(tiny_export, tmp_path_factory) -> Path:
    """The default repository (ONNX Runtime backend on the GPU) beside another model's folder."""
    repo = tmp_path_factory.mktemp("triton_gpu") / "repo"
    (repo / "someone_else" / "1").mkdir(parents=True)
    (repo / "someone_else" / "config.pbtxt").write_text('name: "someone_else"\n')
    write_repository(tiny_export, repo, name="tiny")
    return repo


def test_every_config_parses_and_matches_its_onnx_graph(gpu_repo, tiny_export):
    ensemble, pre, emb = (
        parse(gpu_repo / n) for n in ("invedge_tiny", "invedge_tiny_preprocess", "invedge_tiny_onnx")
    )
    onnx_path = gpu_repo / "invedge_tiny_onnx" / "1" / "model.onnx"
    # the artifact the GPU's ONNX Runtime (CUDA) prefers: fp16, copied byte for byte
    assert onnx_path.read_bytes() == (tiny_export / "model.fp16.onnx").read_bytes()
    meta = read_model_meta(onnx_path)
    assert emb.platform == "onnxruntime_onnx" and config_io(emb) == graph_io(onnx_path)
    inputs, outputs = graph_io(onnx_path)
    assert config_io(pre)[1] == inputs  # the preprocessing output is the graph's input
    assert config_io(pre)[0] == [("IMAGE", "TYPE_STRING", [1])]
    assert config_io(ensemble) == (
        [("IMAGE", "TYPE_STRING", [1])],
        [("EMBEDDING", "TYPE_FP32", [outputs[0][2][0]])],
    )
    assert pre.backend == "python" and (gpu_repo / "invedge_tiny_preprocess" / "1" / "model.py").is_file()
    for config in (ensemble, pre, emb):
        assert config.max_batch_size == 64
        assert meta_of(config) == meta  # the metadata rebuilds from the parameters alone
    for config, kind in ((pre, "KIND_CPU"), (emb, "KIND_GPU")):
        assert list(config.dynamic_batching.preferred_batch_size) == [8, 64]
        assert config.dynamic_batching.max_queue_delay_microseconds == 100
        assert [
            (model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in config.instance_group
        ] == [(kind, 1)]
    assert not emb.optimization.execution_accelerators.gpu_execution_accelerator


def test_the_ensemble_chains_preprocessing_to_the_embedding_model(gpu_repo):
    ensemble = parse(gpu_repo / "invedge_tiny")
    assert ensemble.platform == "ensemble"
    pre, emb = ensemble.ensemble_scheduling.step
    assert pre.model_name == "invedge_tiny_preprocess" and dict(pre.input_map) == {"IMAGE": "IMAGE"}
    assert emb.model_name == "invedge_tiny_onnx"
    assert dict(pre.output_map) == {"images": "preprocessed"} == dict(emb.input_map)
    assert dict(emb.output_map) == {"embeddings": "EMBEDDING"}
    params = {k: p.string_value for k, p in ensemble.parameters.items()}
    assert params["invedge.triton.embedding_model"] == "invedge_tiny_onnx"
    assert params["invedge.triton.preprocess_model"] == "invedge_tiny_preprocess"


def test_other_models_are_left_alone_and_the_readme_lists_ours(gpu_repo):
    assert (gpu_repo / "someone_else" / "config.pbtxt").read_text() == 'name: "someone_else"\n'
    assert sorted(p.name for p in gpu_repo.iterdir()) == [
        "README.md",
        "invedge_tiny",
        "invedge_tiny_onnx",
        "invedge_tiny_preprocess",
        "someone_else",
    ]  # fmt: skip  (no staging folder left)
    readme = (gpu_repo / "README.md").read_text()
    assert "Inference-Header-Content-Length" in readme and "tritonclient" in readme
    assert "/v2/models/invedge_tiny/infer" in readme


@pytest.mark.parametrize(
    ("precision", "mode"), [(None, "INT8"), ("fp16", "FP16"), ("fp32", "FP32")]
)  # fmt: skip
def test_tensorrt_accelerator_follows_the_artifact(tiny_export, tmp_path, precision, mode):
    result = write_repository(
        tiny_export, tmp_path / "repo", name="acc", trt_accelerator=True, precision=precision
    )
    config = parse(tmp_path / "repo" / "invedge_acc_onnx")
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == mode
    assert int(accelerator.parameters["max_workspace_size_bytes"]) == 1024 * 1024 * 1024
    assert result.precision == (precision or "int8")  # ort-trt's preference: symmetric int8 first
    assert config_io(config) == graph_io(tmp_path / "repo" / "invedge_acc_onnx" / "1" / "model.onnx")


def test_cpu_and_python_embedding(tiny_export, tmp_path):
    result = write_repository(
        tiny_export, tmp_path / "repo", name="cpu", embedding="python", device="cpu", max_batch=16,
        preferred_batch=(4, 16), queue_delay_us=500, instances=2, threads=1,
    )  # fmt: skip
    folder = tmp_path / "repo" / "invedge_cpu_onnx"
    config = parse(folder)
    assert config.backend == "python" and result.precision == "int8-cpu"  # ort-cpu's preference
    assert (folder / "1" / "model.onnx").read_bytes() == (tiny_export / "model.int8-cpu.onnx").read_bytes()
    assert config_io(config) == graph_io(folder / "1" / "model.onnx")
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert (
        config.instance_group[0].count == 2
        and config.parameters["invedge.triton.threads"].string_value == "1"
    )
    assert result.to_dict()["models"] == ["invedge_cpu", "invedge_cpu_preprocess", "invedge_cpu_onnx"]


def test_an_existing_model_of_our_name_is_refused_then_replaced_with_overwrite(tiny_export, tmp_path):
    repo = tmp_path / "repo"
    write_repository(tiny_export, repo, name="x", device="cpu")
    before = (repo / "invedge_x_onnx" / "config.pbtxt").read_text()
    with pytest.raises(ConfigError, match="invedge_x exists"):
        write_repository(tiny_export, repo, name="x", device="gpu")
    assert (repo / "invedge_x_onnx" / "config.pbtxt").read_text() == before
    write_repository(tiny_export, repo, name="x", device="gpu", overwrite=True)
    assert "KIND_GPU" in (repo / "invedge_x_onnx" / "config.pbtxt").read_text()
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("model", ["invedge_x", "invedge_x_onnx", "invedge_x_trt"])
def test_overwrite_refuses_a_folder_of_our_name_that_is_not_ours(tiny_export, tmp_path, model):
    """--overwrite replaces only models invedge wrote (their config.pbtxt carries invedge.format):
    another model that happens to have one of our names stays, named in the one line."""
    repo = tmp_path / "repo"
    write_repository(tiny_export, repo, name="x", device="cpu")
    foreign = repo / model
    shutil.rmtree(foreign, ignore_errors=True)
    (foreign / "1").mkdir(parents=True)
    (foreign / "config.pbtxt").write_text(f'name: "{model}"\nbackend: "python"\n')
    snapshot = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=f"{re.escape(str(foreign))} is not a model invedge wrote"):
        write_repository(tiny_export, repo, name="x", device="gpu", overwrite=True)
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == snapshot


def test_a_failure_midway_leaves_the_repository_as_it_was(tiny_export, tmp_path, monkeypatch):
    from invspread_edge_runtime.deploy.triton import config

    repo = tmp_path / "repo"
    write_repository(tiny_export, repo, name="x", device="cpu")
    snapshot = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(config, "ensemble_config", broken)
    with pytest.raises(InvedgeError, match="disk full"):
        write_repository(tiny_export, repo, name="x", device="gpu", overwrite=True)
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == snapshot  # no staging left either


def test_an_export_without_the_artifact_asked_for(tiny_export, tmp_path):
    only_fp32 = tmp_path / "export"
    only_fp32.mkdir()
    shutil.copy(tiny_export / "model.onnx", only_fp32 / "model.onnx")
    with pytest.raises(ModelError, match="no fp16 artifact"):
        write_repository(only_fp32, tmp_path / "repo", precision="fp16")
    assert not (tmp_path / "repo").exists()  # nothing is created before the export is known good


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"name": "bad name"}, "--name"),
        ({"embedding": "tf"}, "--embedding"),
        ({"device": "tpu"}, "--device"),
        ({"max_batch": 0}, "--max-batch 0"),
        ({"max_batch": 10**6}, "--max-batch"),
        ({"queue_delay_us": -1}, "--queue-delay-us"),
        ({"instances": 0}, "--instances"),
        ({"preferred_batch": (128,)}, "--preferred-batch 128"),
        ({"trt_accelerator": True, "device": "cpu"}, "--trt-accelerator"),
        ({"trt_accelerator": True, "embedding": "python"}, "--trt-accelerator"),
        ({"engine": TritonEngine(max_batch=8)}, "engine's maximum batch"),
        (
            {"engine": TritonEngine(max_batch=8, dla_core=0), "max_batch": 8},
            "--dla builds a plan of one fixed",
        ),
        ({"engine": TritonEngine(min_batch=4), "max_batch": 64}, "--min-batch 4"),
    ],
)
def test_bad_options_are_refused_before_any_write(tiny_export, tmp_path, fields, match):
    with pytest.raises(ConfigError, match=match):
        write_repository(tiny_export, tmp_path / "repo", **fields)
    assert not (tmp_path / "repo").exists()


def test_names_come_from_the_run_folder(tmp_path):
    assert base_name(tmp_path / "runs" / "Shop-2" / "export") == "invedge_shop_2"
    assert base_name(tmp_path / "exports" / "v3") == "invedge_v3"
    assert base_name(tmp_path / "x" / "export", name="cams") == "invedge_cams"


def tensorrt_stand_in(monkeypatch, dla_cores: int, dla_max_batch: int = 4096) -> None:
    """`import_tensorrt` gives a stand-in whose Builder reports `dla_cores` DLA cores (as
    tests/runtime/native_tensorrt/test_engine_cache.py's): what `check_dla_core` asks."""
    from invspread_edge_runtime.tensorrt import api

    class Logger:
        WARNING, VERBOSE = 2, 4

        def __init__(self, severity: int) -> None:
            self.severity = severity

    builder = SimpleNamespace(num_DLA_cores=dla_cores, max_DLA_batch_size=dla_max_batch)
    trt = SimpleNamespace(Logger=Logger, Builder=lambda logger: builder)
    monkeypatch.setattr(api, "import_tensorrt", lambda: trt)


@pytest.fixture
def fake_plan(monkeypatch) -> list:
    """build_engine replaced (no TensorRT here; a device with two DLA cores): the calls it gets;
    the plan file says "plan"."""
    from invspread_edge_runtime.tensorrt import build
    from invspread_edge_runtime.verify import engines

    calls = []

    class Info:
        def to_json(self):
            return {"precision": "int8", "profile": [1, 32, 32]}

    def fake_build(onnx_path, engine_path, *settings, meta, check, dla_core):
        calls.append((Path(onnx_path).name, Path(engine_path), settings, dla_core))
        Path(engine_path).write_bytes(b"plan")
        return Info()

    tensorrt_stand_in(monkeypatch, dla_cores=2)
    monkeypatch.setattr(build, "build_engine", fake_build)
    monkeypatch.setattr(engines, "probe_plan_check", lambda path, meta: None)
    return calls


def test_engine_builds_a_plan_model_through_build_engine(tiny_export, tmp_path, fake_plan):
    """The tensorrt_plan path: what build_engine is asked to build, and the model and ensemble
    written around the plan."""
    repo = tmp_path / "repo"
    engine = TritonEngine(min_batch=1, opt_batch=16, max_batch=32, workspace_mb=512)
    result = write_repository(tiny_export, repo, name="t", engine=engine, max_batch=32)
    ((source, plan, settings, dla),) = fake_plan
    assert source == "model.int8.onnx" and dla is None  # TensorRT's preference: symmetric int8
    assert settings[0] == "int8" and settings[1:5] == (1, 16, 32, 512)
    assert plan.name == "model.plan" and (repo / "invedge_t_trt" / "1" / "model.plan").read_bytes() == b"plan"
    config = parse(repo / "invedge_t_trt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 32
    assert not config.instance_group[0].secondary_devices
    assert config_io(config) == graph_io(tiny_export / "model.int8.onnx")
    assert parse(repo / "invedge_t").ensemble_scheduling.step[1].model_name == "invedge_t_trt"
    assert result.embedding_model == "invedge_t_trt" and result.engine["plan"].endswith("model.plan")


def test_a_dla_plan_of_batch_one_runs_on_its_core(tiny_export, tmp_path, fake_plan):
    """A DLA plan has one fixed batch: only batch 1 matches what Triton sends; the plan model's
    instances name the core (Triton's TensorRT backend reads KIND_NVDLA)."""
    engine = TritonEngine(max_batch=1, dla_core=1)
    write_repository(tiny_export, tmp_path / "repo", name="d", engine=engine, max_batch=1)
    assert fake_plan[0][3] == 1
    (group,) = parse(tmp_path / "repo" / "invedge_d_trt").instance_group
    ((kind, core),) = [(d.kind, d.device_id) for d in group.secondary_devices]
    assert model_config_pb2.ModelInstanceGroup.SecondaryDevice.SecondaryDeviceKind.Name(kind) == "KIND_NVDLA"
    assert core == 1


@pytest.mark.parametrize(
    ("cores", "core", "message"),
    [(0, 0, "this GPU has no DLA (DLA cores: 0)"), (1, 1, "--dla 1: this device has 1 DLA core")],
)
def test_dla_on_a_device_without_that_core_is_refused_before_any_work(
    tiny_export, tmp_path, fake_plan, monkeypatch, capsys, cores, core, message
):
    """The device is asked for its DLA core up front (as `invedge export --engine --dla` does):
    one line, nothing built or written."""
    tensorrt_stand_in(monkeypatch, dla_cores=cores)
    with pytest.raises(EngineError, match=re.escape(message)):
        write_repository(
            tiny_export, tmp_path / "repo", engine=TritonEngine(max_batch=1, dla_core=core), max_batch=1
        )
    assert not fake_plan and not (tmp_path / "repo").exists()
    out = str(tmp_path / "r")
    argv = [
        "deploy",
        "triton",
        str(tiny_export),
        "--out",
        out,
        "--engine",
        "--dla",
        str(core),
        "--max-batch",
        "1",
    ]
    assert run(create_app(), argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert not fake_plan and not (tmp_path / "r").exists()


def test_overwrite_without_engine_removes_our_stale_plan(tiny_export, tmp_path, fake_plan):
    repo = tmp_path / "repo"
    write_repository(tiny_export, repo, name="s", engine=TritonEngine(), max_batch=64)
    assert (repo / "invedge_s_trt").is_dir()
    write_repository(tiny_export, repo, name="s", overwrite=True)
    assert not (repo / "invedge_s_trt").exists()
    assert parse(repo / "invedge_s").ensemble_scheduling.step[1].model_name == "invedge_s_onnx"
    assert "invedge_s_trt" not in (repo / "README.md").read_text()


# --- staging, leftovers, the README ---------------------------------------------------------------


def staged(repo: Path) -> list[Path]:
    return sorted(repo.parent.glob(f".{repo.name}.invedge-staging-*"))


def test_models_are_staged_beside_the_repository_and_leftovers_go(tiny_export, tmp_path, monkeypatch):
    """Triton loads every folder in a repository, hidden ones too: nothing of ours is staged inside.
    A killed writer's staging folders (beside, or inside where older versions staged) are removed."""
    from invspread_edge_runtime.deploy.triton import repository

    repo = tmp_path / "repo"
    seen = []
    real = repository._swap

    def watching(repo_arg, staging):
        seen.append((staging.parent, sorted(p.name for p in repo_arg.iterdir())))
        real(repo_arg, staging)

    monkeypatch.setattr(repository, "_swap", watching)
    (tmp_path / ".repo.invedge-staging-dead" / "invedge_x_onnx").mkdir(parents=True)  # killed before its swap
    (repo / ".invedge-staging-old").mkdir(parents=True)
    write_repository(tiny_export, repo, name="x", device="cpu")
    assert seen == [(tmp_path, [])]  # staged in the repository's parent; nothing in the repository yet
    assert not staged(repo) and not [p for p in repo.iterdir() if p.name.startswith(".")]


def test_a_swap_killed_midway_is_finished_by_the_next_write(tiny_export, tmp_path):
    """A writer killed between the two renames of a model's swap (the old folder aside, the new one
    not yet in place) leaves its staging folder; the next writer finishes that swap first."""
    repo, other = tmp_path / "repo", tmp_path / "other" / "repo"
    write_repository(tiny_export, repo, name="x", device="cpu")
    write_repository(tiny_export, other, name="x", device="gpu")  # what the killed writer had staged
    staging = tmp_path / ".repo.invedge-staging-killed"
    shutil.copytree(other.parent / "repo", staging, ignore=shutil.ignore_patterns("README.md"))
    order = ["invedge_x_preprocess", "invedge_x_onnx", "invedge_x"]
    (staging / "swap.json").write_text(json.dumps({"swap": order, "remove": []}))
    shutil.rmtree(staging / "invedge_x_preprocess")  # swapped in already
    shutil.copytree(other / "invedge_x_preprocess", repo / "invedge_x_preprocess", dirs_exist_ok=True)
    (repo / "invedge_x_onnx").rename(staging / "invedge_x_onnx.old")  # killed here
    write_repository(tiny_export, repo, name="y", device="cpu")
    assert "KIND_GPU" in (repo / "invedge_x_onnx" / "config.pbtxt").read_text()  # the new one, whole
    for model in order:
        assert (repo / model / "config.pbtxt").read_text() == (other / model / "config.pbtxt").read_text()
    assert not staged(repo) and (repo / "invedge_y").is_dir()


def test_one_readme_lists_every_ensemble_and_a_foreign_readme_stays(tiny_export, tmp_path):
    repo = tmp_path / "repo"
    write_repository(tiny_export, repo, name="a", device="cpu")
    write_repository(tiny_export, repo, name="b", device="cpu")
    readme = (repo / "README.md").read_text()
    assert "## `invedge_a`" in readme and "## `invedge_b`" in readme and "Triton 2.39" in readme
    (repo / "README.md").write_text("theirs\n")
    write_repository(tiny_export, repo, name="c", device="cpu")
    assert (repo / "README.md").read_text() == "theirs\n"
    assert "## `invedge_c`" in (repo / "README.invedge.md").read_text()


def test_the_export_hint_replaces_the_name_advice(tiny_export, tmp_path):
    write_repository(tiny_export, tmp_path / "repo", name="h", device="cpu")
    with pytest.raises(ConfigError) as caught:
        write_repository(tiny_export, tmp_path / "repo", name="h", exists_hint="Do this instead")
    assert str(caught.value).endswith("Do this instead") and "--name" not in str(caught.value)


# --- the CLI ---------------------------------------------------------------------------------------


def test_cli_writes_and_prints_json(tiny_export, tmp_path, capsys):
    repo = tmp_path / "repo"
    code = run(create_app(), ["deploy", "triton", str(tiny_export), "--out", str(repo), "--name", "c",
                              "--device", "cpu", "--preferred-batch", "4", "--preferred-batch", "32", "--json"])  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ensemble"] == "invedge_c" and doc["precision"] == "int8-cpu"
    assert list(parse(repo / "invedge_c_onnx").dynamic_batching.preferred_batch_size) == [4, 32]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--max-batch", "0"], "--max-batch 0 is out of range"),
        (["--queue-delay-us", "5000000"], "--queue-delay-us"),
        (["--instances", "100"], "--instances"),
        (["--dla", "0"], "--dla"),
        (["--engine", "--dla", "0"], "one fixed batch (64)"),
        (["--engine", "--min-batch", "2"], "--min-batch 2"),
        (["--precision", "fp8"], "fp8"),
        (["--embedding", "tf"], "--embedding"),
    ],
)
def test_cli_bad_input_is_one_line(tiny_export, tmp_path, capsys, extra, match):
    code = run(create_app(), ["deploy", "triton", str(tiny_export), "--out", str(tmp_path / "r"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error:") and len(err.splitlines()) == 1 and match in err


def test_cli_refuses_a_repository_that_is_a_file_and_a_missing_export(tiny_export, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert run(create_app(), ["deploy", "triton", str(tiny_export), "--out", str(tmp_path / "file")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert run(create_app(), ["deploy", "triton", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 1
    assert "export not found" in capsys.readouterr().err


def test_the_python_models_ship_with_the_installed_package():
    """The files the writer copies: in a package the runtime's packaging finds (a wheel holds every
    module of its packages), and as the importable package holds them."""
    from importlib import resources

    import tomllib
    from setuptools import find_packages

    from invspread_edge_runtime.deploy.triton.repository import PYTHON_MODELS

    runtime = Path(__file__).resolve().parents[3] / "runtime"
    found = tomllib.loads((runtime / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert "invspread_edge_runtime.deploy.triton.python_models" in find_packages(
        runtime, include=found["include"]
    )
    shipped = resources.files("invspread_edge_runtime.deploy.triton.python_models")
    for name in ("preprocess.py", "embedding.py", "responses.py"):
        assert shipped.joinpath(name).is_file(), name
        assert (PYTHON_MODELS / name).read_bytes() == shipped.joinpath(name).read_bytes()


class FakeTritonError:
    INVALID_ARG = 3

    def __init__(self, message, code=None):
        self.message, self.code = message, code


class FakeOldTritonError:  # python_backend before 23.10: no error codes, a message only
    def __init__(self, message):
        self.message, self.code = message, None


def fake_pb_utils(error_class):
    class Response:
        def __init__(self, tensors=None, error=None):
            self.tensors, self.error = tensors, error

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

    return SimpleNamespace(TritonError=error_class, InferenceResponse=Response, Tensor=Tensor)


@pytest.mark.parametrize(("error_class", "code"), [(FakeTritonError, 3), (FakeOldTritonError, None)])
def test_the_python_embedding_model_answers_nan_rows_with_an_error(monkeypatch, error_class, code):
    """As `invedge embed`, a NaN or infinite vector is never returned (Triton's module stood in)."""
    import numpy as np

    from invspread_edge_runtime.deploy.triton.python_models import embedding

    monkeypatch.setattr(embedding, "pb_utils", fake_pb_utils(error_class))
    model = embedding.TritonPythonModel.__new__(embedding.TritonPythonModel)
    model.meta, model.model_path = SimpleNamespace(output_name="embeddings"), "invedge_x_onnx/1/model.onnx"
    bad = model._answer(np.array([[1.0, np.nan], [1.0, 0.0]], dtype=np.float32))
    assert "NaN or infinite embeddings for 1 of 2" in bad.error.message and bad.error.code == code
    good = model._answer(np.array([[3.0, 4.0]], dtype=np.float32))
    assert good.error is None and np.allclose(good.tensors[0].array, [[0.6, 0.8]])


def test_a_repository_on_another_file_system_than_its_parent_is_refused(tiny_export, tmp_path, monkeypatch):
    from invspread_edge_runtime.deploy.triton import repository

    (tmp_path / "mnt").mkdir()
    monkeypatch.setattr(repository, "same_file_system", lambda a, b: False)
    with pytest.raises(ConfigError, match="another file system than its parent"):
        write_repository(tiny_export, tmp_path / "mnt", name="m", device="cpu")
    assert not list((tmp_path / "mnt").iterdir()) and not staged(tmp_path / "mnt")
