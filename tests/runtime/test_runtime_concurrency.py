"""Real `invedge` processes: two writers at once on one output, kill -9 at the worst moment, Ctrl-C.

Each scenario pauses one process at a chosen point with the test hook of `hooks.reached`
(INVEDGE_TEST_PAUSE_AT + a marker file it writes + a release file it waits for), so the order of
events is forced, never hoped for: no test depends on how fast anything runs. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

INVEDGE = Path(sys.executable).parent / "invedge"
WAIT_S = 60  # the bound of every wait below; a healthy run takes about a second

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="flock and kill -9 are POSIX"),
    pytest.mark.skipif(
        not INVEDGE.exists(), reason=f"the invedge console script is not installed ({INVEDGE})"
    ),
]
STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT_S)


@pytest.fixture(scope="module")
def model(make_tiny_onnx, tmp_path_factory) -> Path:
    """A tiny ONNX encoder with our metadata (made without torch: each process starts fast)."""
    return make_tiny_onnx(tmp_path_factory.mktemp("model") / "model.onnx")


def images(folder: Path, prefix: str, n: int = 5, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(folder / f"{prefix}{i}.png")
    return folder


def env(tmp_path: Path, pause: str | None = None) -> dict[str, str]:
    values = dict(os.environ)
    values.update(OMP_NUM_THREADS="1", COLUMNS="200", INVEDGE_LOCK_TIMEOUT=str(WAIT_S))
    for key in ("INVEDGE_TEST_PAUSE_AT", "INVEDGE_DEBUG"):
        values.pop(key, None)
    if pause:
        values.update(
            INVEDGE_TEST_PAUSE_AT=pause,
            INVEDGE_TEST_PAUSE_MARKER=str(tmp_path / f"paused-{pause}"),
            INVEDGE_TEST_PAUSE_RELEASE=str(tmp_path / f"release-{pause}"),
            INVEDGE_TEST_PAUSE_S=str(WAIT_S),
        )
    return values


def invedge(tmp_path: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(INVEDGE), *map(str, args)],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


class Background:
    """An `invedge` process whose stderr goes to a file the test can watch."""

    def __init__(self, tmp_path: Path, name: str, *args: object, pause: str | None = None) -> None:
        self.err_path = tmp_path / f"{name}.err"
        self.out_path = tmp_path / f"{name}.out"
        with open(self.err_path, "w") as err, open(self.out_path, "w") as out:
            self.proc = subprocess.Popen(
                [str(INVEDGE), *map(str, args)],
                cwd=tmp_path,
                env=env(tmp_path, pause),
                stdout=out,
                stderr=err,
            )
        STARTED.append(self.proc)

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=WAIT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT_S)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def paused(tmp_path: Path, point: str, proc: Background) -> None:
    marker = tmp_path / f"paused-{point}"
    wait_for(lambda: marker.exists() or proc.proc.poll() is not None, f"the pause at {point}")
    assert marker.exists(), proc.err


def release(tmp_path: Path, point: str) -> None:
    (tmp_path / f"release-{point}").write_text("go")


def waiting(proc: Background) -> None:
    """Wait until `proc` says it is waiting for the lock (or has ended)."""
    wait_for(lambda: "waiting for" in proc.err or proc.proc.poll() is not None, "the second writer to wait")
    assert "waiting for" in proc.err, proc.err


def snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def error_lines(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err, err
    return lines


def ids_of(folder: Path) -> list[str]:
    return json.loads((folder / "ids.json").read_text())


def index_ids(tmp_path: Path, index: Path) -> list[str]:
    done = invedge(tmp_path, "index", "info", index, "--json", "--ids")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["ids"]


def no_leftovers(folder: Path) -> None:
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert hidden == [], hidden


def test_two_index_adds_at_once_both_end_up_in_the_index(tmp_path, model):
    for name in ("base", "a", "b"):
        done = invedge(tmp_path, "embed", model, images(tmp_path / name, name), "--out", f"{name}.emb")
        assert done.returncode == 0, done.stderr
    assert invedge(tmp_path, "index", "build", "base.emb", "--out", "g.index").returncode == 0

    first = Background(tmp_path, "first", "index", "add", "g.index", "a.emb", pause="index-save")
    paused(tmp_path, "index-save", first)  # it has read the index and holds the lock
    second = Background(tmp_path, "second", "index", "add", "g.index", "b.emb")
    waiting(second)  # without the lock it would read the old index now and drop a's items
    release(tmp_path, "index-save")
    assert first.wait() == 0, first.err
    assert second.wait() == 0, second.err
    ids = index_ids(tmp_path, tmp_path / "g.index")
    assert sorted(ids) == sorted(
        ids_of(tmp_path / "base.emb") + ids_of(tmp_path / "a.emb") + ids_of(tmp_path / "b.emb")
    )
    no_leftovers(tmp_path)


def test_two_embeds_into_one_folder_the_second_refuses_clearly(tmp_path, model):
    images(tmp_path / "a", "a")
    images(tmp_path / "b", "b", seed=1)
    first = Background(tmp_path, "first", "embed", model, "a", "--out", "same.emb", pause="embed-join")
    paused(tmp_path, "embed-join", first)
    second = Background(tmp_path, "second", "embed", model, "b", "--out", "same.emb")
    waiting(second)
    release(tmp_path, "embed-join")
    assert first.wait() == 0, first.err
    assert second.wait() == 1, second.err
    lines = error_lines(second.err)
    assert len(lines) == 1 and "already holds finished embeddings" in lines[0] and "--overwrite" in lines[0]
    assert "✓" not in second.err
    assert sorted(ids_of(tmp_path / "same.emb")) == [f"a{i}.png" for i in range(5)]
    assert invedge(tmp_path, "index", "build", "same.emb", "--out", "same.index").returncode == 0


def test_two_index_builds_of_one_file_the_second_refuses_clearly(tmp_path, model):
    for name in ("a", "b"):
        done = invedge(tmp_path, "embed", model, images(tmp_path / name, name), "--out", f"{name}.emb")
        assert done.returncode == 0, done.stderr
    first = Background(tmp_path, "first", "index", "build", "a.emb", "--out", "g.index", pause="index-save")
    paused(tmp_path, "index-save", first)
    second = Background(tmp_path, "second", "index", "build", "b.emb", "--out", "g.index")
    waiting(second)
    release(tmp_path, "index-save")
    assert first.wait() == 0, first.err
    assert second.wait() == 1, second.err
    lines = error_lines(second.err)
    assert len(lines) == 1 and "already exists" in lines[0] and "--overwrite" in lines[0]
    assert sorted(index_ids(tmp_path, tmp_path / "g.index")) == sorted(ids_of(tmp_path / "a.emb"))


@pytest.mark.parametrize("overwrite", [False, True], ids=["fresh", "overwrite"])
def test_kill_9_in_the_join_of_embed_then_a_rerun_succeeds(tmp_path, model, overwrite):
    images(tmp_path / "a", "a")
    images(tmp_path / "b", "b", seed=1)
    out = tmp_path / "photos.emb"
    before: dict[str, bytes] = {}
    if overwrite:  # finished embeddings that the killed --overwrite run must not touch
        assert invedge(tmp_path, "embed", model, "a", "--out", out).returncode == 0
        before = snapshot(out)
    command = ["embed", model, "b", "--out", out] + (["--overwrite"] if overwrite else [])
    victim = Background(tmp_path, "victim", *command, pause="embed-join")
    paused(tmp_path, "embed-join", victim)
    victim.kill9()
    if overwrite:
        assert snapshot(out) == before  # the old folder is whole: the new one was built beside it
    else:  # the crash left our own temporary file inside the folder (a rerun must not trip on it)
        assert any(p.name.endswith(".tmp") for p in out.iterdir())

    done = invedge(tmp_path, *command)
    assert done.returncode == 0, done.stderr
    assert sorted(ids_of(out)) == [f"b{i}.png" for i in range(5)]
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "ids.json", "manifest.json"]
    no_leftovers(tmp_path)
    assert invedge(tmp_path, "index", "build", out, "--out", "g.index").returncode == 0


def test_kill_9_between_the_renames_of_a_swap_keeps_a_complete_folder(tmp_path, model):
    images(tmp_path / "a", "a")
    images(tmp_path / "b", "b", seed=1)
    out = tmp_path / "photos.emb"
    assert invedge(tmp_path, "embed", model, "a", "--out", out).returncode == 0
    victim = Background(
        tmp_path, "victim", "embed", model, "b", "--out", out, "--overwrite", pause="embed-swap"
    )
    paused(tmp_path, "embed-swap", victim)
    victim.kill9()
    assert not out.exists()  # the worst moment: the old folder aside, the new one not yet in
    aside, staging = tmp_path / ".photos.emb.old", tmp_path / ".photos.emb.staging"
    assert (aside / "manifest.json").is_file() and (staging / "manifest.json").is_file()

    # a reader is told what happened and what to run
    done = invedge(tmp_path, "index", "build", out, "--out", "g.index")
    assert done.returncode == 1 and "run that 'invedge embed' command again" in done.stderr.lower()
    done = invedge(tmp_path, "embed", model, "b", "--out", out)  # even without --overwrite
    assert done.returncode == 1 and "already holds finished embeddings" in done.stderr
    assert sorted(ids_of(out)) == [f"b{i}.png" for i in range(5)]  # the swap was completed
    no_leftovers(tmp_path)


def test_kill_9_while_an_index_is_saved_then_a_rerun_succeeds(tmp_path, model):
    for name in ("a", "b"):
        done = invedge(tmp_path, "embed", model, images(tmp_path / name, name), "--out", f"{name}.emb")
        assert done.returncode == 0, done.stderr
    assert invedge(tmp_path, "index", "build", "a.emb", "--out", "g.index").returncode == 0
    before = snapshot(tmp_path / "g.index")
    victim = Background(tmp_path, "victim", "index", "add", "g.index", "b.emb", pause="index-save")
    paused(tmp_path, "index-save", victim)
    victim.kill9()
    assert snapshot(tmp_path / "g.index") == before
    assert any(p.name.startswith(".g.index.") and p.name.endswith(".tmp") for p in tmp_path.iterdir())

    done = invedge(tmp_path, "index", "add", "g.index", "b.emb")
    assert done.returncode == 0, done.stderr
    assert len(index_ids(tmp_path, tmp_path / "g.index")) == 10
    no_leftovers(tmp_path)  # the dead writer's temporary file was removed under the lock


def test_ctrl_c_in_embed_says_what_was_saved_and_how_to_resume(tmp_path, model):
    images(tmp_path / "a", "a", n=6)
    command = ["embed", model, "a", "--out", "photos.emb", "--batch", "2"]
    victim = Background(tmp_path, "victim", *command, pause="embed-batch")
    paused(tmp_path, "embed-batch", victim)  # the first batch of 2 is embedded
    victim.proc.send_signal(signal.SIGINT)
    assert victim.wait() == 130
    err = victim.err
    assert "Traceback" not in err
    assert "2 of 6 images are embedded and saved" in err, err
    assert f"Resume with: invedge embed {model} a --out photos.emb" in err.replace("\n", " "), err

    done = invedge(tmp_path, *command)
    assert done.returncode == 0, done.stderr
    assert "resumed: 2 images" in done.stderr
    assert len(ids_of(tmp_path / "photos.emb")) == 6
