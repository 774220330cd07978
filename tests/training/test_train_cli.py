"""`invedge train` and `invedge eval` from the command line: in-process, and as real processes for Ctrl-C and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import TINY_TRAIN_OPTIONS as TINY
from tiny import invedge

from invspread_edge.checkpoint import load_checkpoint
from invspread_edge.commands import train as train_cmd

INVEDGE = str(Path(sys.executable).parent / "invedge")


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    rc = invedge("train", "--data", "fashion-mnist", "--limit", "128", "--epochs", "1", "--out", out,
                 "--eval-memory", "200", "--eval-queries", "50", "-q", *TINY)  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "training summary" in captured.out and f"invedge export {out}" in captured.out
    assert "kNN accuracy" in captured.out and "checkpoint.safetensors" in captured.out
    assert "epoch 1/1" in captured.err

    rc = invedge("eval", out, "--limit", "200", "--json")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out)
    assert (
        result["protocol"] == "knn" and result["data"] == "fashion-mnist" and 0 < result["knn_accuracy"] <= 1
    )

    rc = invedge("eval", out, "--protocol", "retrieval", "--classes", "5-9", "--limit", "100")
    captured = capsys.readouterr()
    assert rc == 0 and "Recall@8" in captured.out and "NMI" in captured.out

    rc = invedge("train", "--data", "fashion-mnist", "--limit", "128", "--out", out, *TINY)
    assert rc == 1 and "already holds a run" in capsys.readouterr().err
    rc = invedge("train", "--resume", out, "--width", "16")
    err = capsys.readouterr().err
    assert rc == 1 and "--width cannot change" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "/no/such/folder", "--out", "X"], "unknown data"),
        (["train", "--data", "fashion-mnist", "--precision", "fp8", "--out", "X"], "Invalid precision"),
        (["train", "--resume", "/no/such/run"], "no checkpoint"),
        (["eval"], "no run given"),
        (["eval", "--baseline", "noise"], "Only pixels, pixels-normalized, untrained"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert invedge(*argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A finished 1-epoch run made by the CLI."""
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = invedge("train", "--data", "fashion-mnist", "--limit", "128", "--epochs", "1", "--out", out,
                 "--eval-every", "0", "-q", *TINY)  # fmt: skip
    assert rc == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--data", "/no/such/folder"], ["unknown data"]),
        (["--data", "fashion-mnist", "--temperature", "0"], ["--temperature 0 is out of range. Use 0.01"]),
        (["--data", "fashion-mnist", "--seed", "-1"], ["--seed -1 is out of range. Use 0 to 4294967295"]),
        (["--data", "fashion-mnist", "--limit", "10"], ["fewer than one batch"]),
        (["--data", "fashion-mnist", "--arch", "vgg"], ["Only cifar_resnet18"]),
    ],
)
def test_overwrite_with_bad_input_is_one_line_and_keeps_the_run(cli_run, tmp_path, capsys, argv, needles):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(cli_run, run)
    before = _files(run)
    assert invedge("train", *argv, "--out", run, "--overwrite", "-q", *TINY) == 1
    one_line_error(capsys, *needles)
    assert _files(run) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".run.lock") == ["run"]


def test_wrong_files_and_folders_are_one_line(cli_run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert invedge("train", "--data", "fashion-mnist", "--out", blocker, *TINY) == 1
    one_line_error(capsys, "is a file, not a folder")
    assert invedge("train", "--resume", cli_run / "checkpoint.safetensors") == 1
    one_line_error(capsys, "--resume takes a run folder", f"--resume {cli_run}")
    assert invedge("train", "--resume", blocker) == 1
    one_line_error(capsys, "--resume takes a run folder")
    assert invedge("eval", cli_run, "--batch", "0") == 1
    one_line_error(capsys, "--batch 0 is out of range. Use 1 to 1024")
    assert invedge("eval", cli_run, "--k", "0") == 1
    one_line_error(capsys, "--k 0 is out of range. Use 1 to 10000")
    assert invedge("eval", blocker) == 1
    one_line_error(capsys, "damaged or not a safetensors file")


def test_eval_takes_the_data_from_the_checkpoint_not_run_json(cli_run, tmp_path, capsys, image_folder):
    """run.json gone, or valid JSON that is not an object: eval still measures on the run's data."""
    import shutil

    rc = invedge("train", "--data", image_folder, "--image-size", "16", "--epochs", "1", "--batch-size", "20",
                 "--out", tmp_path / "folder_run", "--eval-every", "0", "-q", "--width", "8",
                 "--embedding-dim", "16", "--precision", "fp32", "--workers", "0")  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "folder_run"
    (run / "run.json").unlink()
    capsys.readouterr()
    assert invedge("eval", run, "--json") == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["data"] == str(image_folder) and result["mode"] == "leave-one-out"
    assert result["k"] == 9 and result["k_requested"] == 200  # 40 images, 4 classes: k clamped
    assert "using k = 9" in captured.err
    other = tmp_path / "other"
    shutil.copytree(cli_run, other)
    (other / "run.json").write_text("[1, 2, 3]\n")
    assert invedge("eval", other, "--limit", "100", "--json") == 0
    assert json.loads(capsys.readouterr().out)["data"] == "fashion-mnist"


def test_default_run_names():
    assert train_cmd._default_name("fashion-mnist") == "fashion-mnist"
    assert train_cmd._default_name("cifar10:~/data/c10") == "cifar10-c10"
    assert train_cmd._default_name("./my_images") == "my_images"


def test_the_flags_are_train_configs_fields():
    """Each `config.option` field is one `invedge train` flag with its help and range; the
    python-only fields are none."""
    from dataclasses import fields

    import typer

    from invspread_edge.config import TRAIN_BOUNDS, TrainConfig
    from invspread_edge_runtime.cli import create_app

    params = {p.name: p for p in typer.main.get_command(create_app()).commands["train"].params}
    for f in fields(TrainConfig):
        if not f.metadata.get("flag", True):
            assert f.name not in params
            continue
        assert params[f.name].opts[0] == "--" + f.name.replace("_", "-")
        assert params[f.name].help.startswith(f.metadata["help"])
        if f.name in TRAIN_BOUNDS:
            assert TRAIN_BOUNDS[f.name].help in params[f.name].help
    assert params["data"].opts[1:] == ["-d"] and params["batch_size"].opts[1:] == ["-b"]
    assert params["detach_keys"].secondary_opts == ["--no-detach-keys"]
    assert "[default: 128]" in params["batch_size"].help


def _spawn(*argv: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [INVEDGE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.2)


def _step(run: Path) -> int:
    try:
        return load_checkpoint(run).step
    except Exception:
        return -1


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    proc = _spawn("train", "--data", "fashion-mnist", "--limit", "2048", "--epochs", "1", "--out", str(run),
                  "--eval-every", "0", *TINY)  # fmt: skip
    _wait_for(lambda: (run / "run.json").is_file(), proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"invedge train --resume {run}" in err and "Traceback" not in err
    ckpt = load_checkpoint(run)
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert 0 < ckpt.step < 64

    done = subprocess.run(
        [INVEDGE, "train", "--resume", str(run), "-q"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(run).step == 64 and "resuming at epoch" in done.stderr


def test_kill_9_leaves_a_loadable_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _spawn("train", "--data", "fashion-mnist", "--limit", "4096", "--epochs", "1", "--out", str(run),
                  "--eval-every", "0", "--save-every-steps", "1", *TINY)  # fmt: skip
    _wait_for(lambda: _step(run) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    ckpt = load_checkpoint(run)  # whatever moment the kill hit, the last complete write is there
    assert ckpt.step >= 3 and ckpt.config["train"]["save_every_steps"] == 1


def test_torchrun_two_processes_on_gloo(tmp_path):
    """DDP on the CPU: 2 processes × batch 16 share each step; only rank 0 writes and reports."""
    run = tmp_path / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    # --standalone: the rendezvous store binds a port the kernel picks free, never the fixed default
    # 29500, so a parallel xdist worker or another job on the machine cannot collide with it
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "--no-python", INVEDGE, "train", "--data", "fashion-mnist",
         "--limit", "256", "--epochs", "1", "--out", str(run), "--eval-memory", "300", "--eval-queries", "100",
         "-q", "--width", "8", "--embedding-dim", "16", "--batch-size", "16", "--precision", "fp32"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    # the head holds a rank's own error (e.g. a C++ abort), the tail torchrun's summary of it
    assert done.returncode == 0, done.stderr[:3000] + "\n...\n" + done.stderr[-1500:]
    assert done.stdout.count("training summary") == 1 and "× 2 processes" in done.stderr
    (m,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert m["step"] == 8 and m["images"] == 256 and 0 <= m["knn_accuracy"] <= 1
    info = json.loads((run / "run.json").read_text())
    assert info["environment"]["world_size"] == 2 and info["status"] == "finished"
