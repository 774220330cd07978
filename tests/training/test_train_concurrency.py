"""`invedge train` as real processes: two at once on one run folder, and kill -9 at the worst moments.

The worst moments are reached with the test hook INVEDGE_TEST_PAUSE_AT=<point>
(invspread_edge_runtime/hooks.py): the process writes a marker file there and waits, and the test kills it, or
lets it go on by creating the release file. Points: checkpoint-save (a new checkpoint half written,
the previous one in place), run-swap (an --overwrite's new run complete in its staging folder, the
old run still in RUN), run-swapped (the folders exchanged, the old run not yet removed).
Every training here is tiny (width 8, a few hundred images), so each process takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import TINY_TRAIN_OPTIONS

from invspread_edge.checkpoint import load_checkpoint
from invspread_edge.run_folder import replaced_path, staging_path

INVEDGE = str(Path(sys.executable).parent / "invedge")
TINY = [*TINY_TRAIN_OPTIONS, "--eval-every", "0", "-q"]
TIMEOUT_S = 180


def spawn(*argv: str, pause: str | None = None, tmp: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if pause is not None:
        assert tmp is not None
        env.update(
            INVEDGE_TEST_PAUSE_AT=pause,
            INVEDGE_TEST_PAUSE_MARKER=str(tmp / "paused"),
            INVEDGE_TEST_PAUSE_RELEASE=str(tmp / "release"),
            INVEDGE_TEST_PAUSE_S=str(TIMEOUT_S),
        )
    return subprocess.Popen(
        [INVEDGE, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before {path.name}: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def kill_9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [INVEDGE, *map(str, argv)], capture_output=True, text=True, timeout=TIMEOUT_S, env=env
    )


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def train_argv(run: Path, seed: int = 0, limit: int = 256) -> list[str]:
    return ["train", "--data", "fashion-mnist", "--limit", str(limit), "--epochs", "1", "--out", run,
            "--seed", str(seed), *TINY]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    done = run_cli(*train_argv(run, seed=0))
    assert done.returncode == 0, done.stderr
    (run / "mine.txt").write_text("the user's file")
    return run


@pytest.fixture
def old_run(finished, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


def test_a_second_writer_is_refused_at_once_naming_the_first(tmp_path):
    run = tmp_path / "run"
    first = spawn(*train_argv(run), "--save-every-steps", "2", pause="checkpoint-save", tmp=tmp_path)
    wait_for(tmp_path / "paused", first)  # the first holds the lock, in the middle of a checkpoint

    second = run_cli(*train_argv(run, seed=1), "--overwrite")
    assert second.returncode == 1
    line = one_line(second.stderr)
    assert f"{run} is being written by another invedge process" in line and f"pid {first.pid}" in line
    resume = run_cli("train", "--resume", run)
    assert resume.returncode == 1 and f"pid {first.pid}" in one_line(resume.stderr)
    assert not staging_path(run).exists()  # the refused --overwrite built nothing

    (tmp_path / "release").touch()
    _, err = first.communicate(timeout=TIMEOUT_S)
    assert first.returncode == 0, err
    ckpt = load_checkpoint(run)
    assert ckpt.epoch == 1 and ckpt.config["train"]["seed"] == 0  # the first one's run, unaffected
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("point", ["checkpoint-save", "run-swap"])
def test_kill_9_during_overwrite_leaves_the_old_run_then_a_rerun_succeeds(old_run, tmp_path, point):
    before = files(old_run)
    argv = [*train_argv(old_run, seed=7), "--overwrite"]
    if point == "checkpoint-save":
        argv += ["--save-every-steps", "2"]  # pause at a save with a previous staged checkpoint
    proc = spawn(*argv, pause=point, tmp=tmp_path)
    wait_for(tmp_path / "paused", proc)
    assert staging_path(old_run).is_dir() and files(old_run) == before  # the new run only beside it
    kill_9(proc)
    assert files(old_run) == before and load_checkpoint(old_run).config["train"]["seed"] == 0

    done = run_cli(*train_argv(old_run, seed=7), "--overwrite")
    assert done.returncode == 0, done.stderr
    ckpt = load_checkpoint(old_run)
    assert ckpt.config["train"]["seed"] == 7 and ckpt.epoch == 1
    assert (old_run / "mine.txt").read_text() == "the user's file"
    assert not staging_path(old_run).exists() and not replaced_path(old_run).exists()


def test_kill_9_right_after_the_swap_leaves_the_new_run(old_run, tmp_path):
    proc = spawn(*train_argv(old_run, seed=7), "--overwrite", pause="run-swapped", tmp=tmp_path)
    wait_for(tmp_path / "paused", proc)
    kill_9(proc)
    if not staging_path(old_run).exists():
        pytest.skip("this file system cannot exchange folders atomically: two renames were used")
    ckpt = load_checkpoint(old_run)  # RUN is the complete new run; the old one waits to be removed
    assert ckpt.config["train"]["seed"] == 7 and ckpt.epoch == 1
    assert (old_run / "mine.txt").read_text() == "the user's file"
    assert load_checkpoint(staging_path(old_run)).config["train"]["seed"] == 0

    done = run_cli("train", "--resume", old_run, "--epochs", "2")  # a rerun: cleans up, continues
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(old_run).epoch == 2 and not staging_path(old_run).exists()


def test_kill_9_during_a_checkpoint_save_keeps_the_last_good_one(tmp_path):
    run = tmp_path / "run"
    proc = spawn(*train_argv(run), "--save-every-steps", "1", pause="checkpoint-save", tmp=tmp_path)
    wait_for(tmp_path / "paused", proc)
    temporaries = list(run.glob(".checkpoint.safetensors.*.tmp"))
    assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0  # half of the new one
    kill_9(proc)
    ckpt = load_checkpoint(run)  # the previous checkpoint: complete and loadable
    assert ckpt.step == 0 and ckpt.config["train"]["save_every_steps"] == 1

    done = run_cli("train", "--resume", run)
    assert done.returncode == 0, done.stderr
    assert "resuming at epoch 1" in done.stderr and load_checkpoint(run).step == 8
    assert list(run.glob(".*.tmp")) == []  # the rerun removed the killed write's leftover
