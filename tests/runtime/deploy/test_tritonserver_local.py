"""scripts/tritonserver_local.py without the server: which repositories PyTriton's binary can serve
(configs parsed with Triton's own ModelConfig protobuf), its one-line errors, and the backend folder
several starts make at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from triton_testing import SCRIPT, local, require

require("tritonclient.grpc")  # model_config_pb2: the script parses every config.pbtxt with it

VERSION = "{}.{}".format(*sys.version_info[:2])


def _model(repo: Path, name: str, config: str | None, files: tuple[str, ...] = ()) -> None:
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    if config is not None:
        (folder / "config.pbtxt").write_text(textwrap.dedent(config))
    for file in files:
        (folder / "1" / file).write_text("")


def _refusal(repo: Path, load: list[str] | None = None) -> str:
    with pytest.raises(local.NotServable) as caught:
        local.check_repository(repo, load)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_the_default_repository_is_refused_and_the_python_cpu_one_served(tiny_export, tmp_path):
    from invspread_edge_runtime.deploy.triton import write_repository

    write_repository(tiny_export, tmp_path / "gpu", name="x", device="gpu")
    message = _refusal(tmp_path / "gpu")
    assert "invedge_x_onnx (onnxruntime_onnx)" in message
    assert "invedge deploy triton EXPORT --out REPO --embedding python --device cpu" in message
    write_repository(tiny_export, tmp_path / "cpu", name="x", embedding="python", device="cpu")
    local.check_repository(tmp_path / "cpu")


def test_configs_are_parsed_and_model_files_name_the_backend(tmp_path):
    repo = tmp_path / "repo"
    _model(repo, "commented", 'backend: "python"\n# instance_group [ { kind: KIND_GPU } ]\n', ("model.py",))
    _model(repo, "inferred_python", 'name: "inferred_python"\n', ("model.py",))
    _model(repo, "no_config_python", None, ("model.py",))
    _model(repo, "ensemble", 'platform: "ensemble"\n')
    local.check_repository(repo)

    _model(repo, "gpu", 'backend: "python"\ninstance_group [ { kind: KIND_GPU count: 1 } ]\n', ("model.py",))
    _model(repo, "no_config_onnx", None, ("model.onnx",))
    _model(repo, "inferred_plan", "max_batch_size: 8\n", ("model.plan",))
    _model(repo, "broken", 'backend: "python"\ninstance_group [ { kind: KIND_TPU } ]\n', ("model.py",))
    message = _refusal(repo)
    assert "broken (config.pbtxt does not parse: " in message and "KIND_TPU" in message
    assert "fix its config.pbtxt, or move the model out of the repository" in message
    for said in ("gpu (KIND_GPU)", "inferred_plan (tensorrt)", "no_config_onnx (onnxruntime)"):
        assert said in message, message
    assert "move it out of the repository (this binary has only the Python backend)" in message
    assert "invedge deploy triton" not in message  # none of these carries our metadata
    for served in ("commented", "inferred_python", "no_config_python", "ensemble ("):
        assert served not in message, message


def test_explicit_model_control_checks_only_the_models_it_loads(tmp_path):
    repo = tmp_path / "repo"
    _model(repo, "ours", 'backend: "python"\n', ("model.py",))
    _model(repo, "theirs", 'platform: "onnxruntime_onnx"\n', ("model.onnx",))
    steps = 'ensemble_scheduling { step [ { model_name: "theirs" model_version: -1 } ] }\n'
    _model(repo, "chain", f'platform: "ensemble"\n{steps}')

    explicit = ["--model-control-mode=explicit", "--log-verbose=1"]
    assert local.models_to_load(["--log-verbose=1"]) is None
    assert local.models_to_load(explicit) == []
    assert local.models_to_load([*explicit, "--load-model=*"]) is None
    assert local.models_to_load(
        ["--model-control-mode", "explicit", "--load-model", "a", "--load-model=b"]
    ) == [
        "a",
        "b",
    ]
    local.check_repository(repo, local.models_to_load([*explicit, "--load-model=ours"]))
    local.check_repository(repo, [])
    for load in (["ours", "theirs"], ["chain"]):  # an ensemble loads the models it calls
        message = _refusal(repo, load)
        assert message.endswith(
            "theirs (onnxruntime_onnx): move it out of the repository (this binary has only the Python backend)"
        ), message
    assert "theirs (onnxruntime_onnx)" in _refusal(repo)


def test_main_says_what_is_wrong_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(local, "missing", lambda: None)
    assert local.main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'nowhere'} is not a folder"), err


def test_a_missing_install_names_make_triton_server_and_other_reasons_their_own_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "BINARY", local.ROOT / ".cache" / "no-such-pytriton" / "tritonserver")
    assert local.missing() == f".cache/no-such-pytriton/tritonserver is missing. Run {local.INSTALL}"

    dist = _fake_dist(tmp_path, "3.11")
    (tmp_path / "ready").write_text("")
    monkeypatch.setattr(local, "BINARY", tmp_path / "ready")
    monkeypatch.setattr(local, "STUB_PYTHON_READY", tmp_path / "ready")
    monkeypatch.setattr(local, "DIST", dist)
    monkeypatch.setattr(local, "stub_python", lambda: {"version": "3.99", "libdir": "", "shared": True})
    reason = local.missing()
    assert reason is not None and "no Python-backend stub for Python 3.99 (only 3.11)" in reason
    assert local.INSTALL not in reason and "\n" not in reason


def test_a_stub_python_that_hangs_is_one_line(monkeypatch):
    def hang(*args, **kwargs):
        assert kwargs["timeout"] == local.STUB_PYTHON_TIMEOUT_S
        raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])

    monkeypatch.setattr(local.subprocess, "run", hang)
    with pytest.raises(local.NotServable, match=r"did not answer in 30 s: remove \.cache/triton-python"):
        local.stub_python.__wrapped__()  # not the cached answer


def _fake_dist(tmp_path: Path, version: str) -> Path:
    """A stand-in for the wheel's tritonserver folder: the Python backend's files and one stub."""
    dist = tmp_path / "dist"
    (dist / "backends" / "python").mkdir(parents=True)
    (dist / "backends" / "python" / "libtriton_python.so").write_text("backend")
    stub = dist / "python_backend_stubs" / version / local.STUB
    stub.parent.mkdir(parents=True)
    stub.write_text("stub")
    return dist


def _stand_ins(monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(local, "DIST", _fake_dist(tmp_path, VERSION))
    monkeypatch.setattr(local, "BACKENDS", tmp_path / "backends")
    monkeypatch.setattr(local, "stub_python", lambda: {"version": VERSION, "libdir": "", "shared": True})
    return tmp_path / "backends"


def test_two_starts_at_once_make_one_backend_folder(tmp_path):
    dist, backends, go = _fake_dist(tmp_path, VERSION), tmp_path / "backends", tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import importlib.util, sys, time
        from pathlib import Path
        spec = importlib.util.spec_from_file_location("tritonserver_local", {str(SCRIPT)!r})
        local = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(local)
        local.DIST, local.BACKENDS = Path({str(dist)!r}), Path({str(backends)!r})
        local.STUB_PYTHON = Path(sys.executable)
        local.stub_python()  # asked before the race, as a start does before it copies
        Path({str(tmp_path)!r}, "ready-" + sys.argv[1]).write_text("")
        while not Path({str(go)!r}).exists():
            time.sleep(0.005)
        print(local.backend_dir())
        """
    )
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n in range(2)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # both at the starting line, then off together
    go.write_text("")
    results = [start.communicate(timeout=60) for start in starts]
    assert [start.returncode for start in starts] == [0, 0], results
    assert [out.strip() for out, _ in results] == [str(backends / VERSION)] * 2
    assert sorted(p.name for p in backends.iterdir()) == [VERSION]  # no staging folder left
    assert (backends / VERSION / "python" / local.STUB).read_text() == "stub"
    assert (backends / VERSION / "python" / "libtriton_python.so").read_text() == "backend"


def test_a_backend_folder_without_the_stub_says_remove_it(tmp_path, monkeypatch):
    backends = _stand_ins(monkeypatch, tmp_path)
    (backends / VERSION / "python").mkdir(parents=True)
    with pytest.raises(local.NotServable) as caught:
        local.backend_dir()
    assert f"remove {backends / VERSION}" in str(caught.value) and "\n" not in str(caught.value)


def test_staging_folders_of_dead_starts_are_cleared(tmp_path, monkeypatch):
    backends = _stand_ins(monkeypatch, tmp_path)
    old, fresh, other = backends / f".{VERSION}.dead", backends / f".{VERSION}.live", backends / ".3.0.dead"
    for folder in (old, fresh, other):
        (folder / "python").mkdir(parents=True)
    an_hour_ago = time.time() - 3600
    for folder in (old, other):
        os.utime(folder, (an_hour_ago, an_hour_ago))
    assert local.backend_dir() == backends / VERSION
    assert not old.exists() and fresh.is_dir() and other.is_dir()  # another version's: not this start's
