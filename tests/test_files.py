import errno
import json
import os

import pytest

from invspread_edge_runtime.errors import InvedgeError
from invspread_edge_runtime.files import atomic_path, atomic_write_json, read_json, sha256_file


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert read_json(target) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # no temporary left behind


def test_failure_keeps_previous_file_and_removes_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_disk_full_is_one_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    target.write_bytes(b"good")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InvedgeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
        monkeypatch.setattr(os, "replace", full)
    assert target.read_bytes() == b"good"


def test_read_json_reports_damage(tmp_path):
    bad = tmp_path / "run.json"
    bad.write_text("{not json")
    with pytest.raises(InvedgeError, match="damaged"):
        read_json(bad, "run.json")
    with pytest.raises(InvedgeError, match="not found"):
        read_json(tmp_path / "missing.json")


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    p = tmp_path / "f"
    p.write_bytes(os.urandom(3_000_000))
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    assert json.loads(json.dumps({"ok": True}))


def test_written_file_has_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
