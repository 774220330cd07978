"""runtime/locks.py: one writer at a time, the holder named, released by the kernel on kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from invspread_edge_runtime.errors import ConfigError, LockedError
from invspread_edge_runtime.locks import exclusive_lock, lock_path

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from invspread_edge_runtime.locks import exclusive_lock
    with exclusive_lock(sys.argv[1], "test output", timeout=0):
        Path(sys.argv[2]).write_text("held")
        time.sleep(float(sys.argv[3]))
    """
)


def _hold(target: Path, marker: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target), str(marker), str(seconds)])
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, "the holder died before taking the lock"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.02)
    return proc


def test_lock_file_is_a_hidden_sibling(tmp_path):
    target = tmp_path / "gallery.index"
    assert lock_path(target) == tmp_path / ".gallery.index.lock"
    with exclusive_lock(target, timeout=0) as held:
        assert held.is_file()
    assert not target.exists()  # the lock never creates the output itself


def test_second_writer_gets_one_line_naming_the_holder(tmp_path):
    target = tmp_path / "out.emb"
    proc = _hold(target, tmp_path / "marker", 30)
    try:
        with pytest.raises(LockedError) as caught, exclusive_lock(target, timeout=0):
            pass
        message = str(caught.value)
        assert str(target) in message and f"pid {proc.pid}" in message
        assert "\n" not in message
    finally:
        proc.kill()
        proc.wait()


def test_waiting_writer_gets_the_lock_when_the_holder_finishes(tmp_path):
    target = tmp_path / "out.index"
    proc = _hold(target, tmp_path / "marker", 0.5)
    with exclusive_lock(target, timeout=30):
        assert proc.wait(timeout=30) == 0  # it could only get here after the holder let go


def test_kill_9_releases_the_lock(tmp_path):
    target = tmp_path / "run"
    proc = _hold(target, tmp_path / "marker", 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with exclusive_lock(target, timeout=5):  # a stale lock file never blocks a rerun
        pass


def test_unwritable_folder_is_one_clear_error(tmp_path):
    if os.geteuid() == 0:
        blocked = tmp_path / "file"
        blocked.write_text("x")  # root ignores permissions: a file where a folder must be
        target = blocked / "out.index"
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        target = folder / "out.index"
    from invspread_edge_runtime.errors import InvedgeError

    with pytest.raises(InvedgeError, match=r"cannot write|out\.index"), exclusive_lock(target, timeout=0):
        pass


@pytest.mark.parametrize("value", ["abc", "nan", "-1"])
def test_a_garbage_lock_timeout_variable_is_one_clear_error(tmp_path, monkeypatch, value):
    monkeypatch.setenv("INVEDGE_LOCK_TIMEOUT", value)
    with pytest.raises(ConfigError, match="INVEDGE_LOCK_TIMEOUT"), exclusive_lock(tmp_path / "out"):
        pass


def test_the_lock_timeout_variable_is_read_when_a_lock_is_taken(tmp_path, monkeypatch):
    marker = tmp_path / "held"
    holder = _hold(tmp_path / "out", marker, 30)
    try:
        monkeypatch.setenv("INVEDGE_LOCK_TIMEOUT", "0")
        with pytest.raises(LockedError), exclusive_lock(tmp_path / "out"):
            pass
    finally:
        holder.kill()
        holder.wait()
