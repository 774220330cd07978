import errno
import json
import os

import pytest

from invspread_edge_runtime.errors import InvedgeError
from invspread_edge_runtime.files import atomic_path, atomic_write_json, read_json, recover_swap, sha256_file


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


def test_write_npy_reads_back_with_numpy_and_hashes_every_byte(tmp_path):
    import hashlib

    import numpy as np

    from invspread_edge_runtime.files import write_npy

    for array in (np.arange(24, dtype=np.float32).reshape(6, 4), np.zeros((0, 8), np.float16)):
        digest = hashlib.sha256()
        path = tmp_path / f"a{array.dtype}.npy"
        with open(path, "wb") as fh:
            write_npy(fh, array, digest)
        back = np.load(path, allow_pickle=False)
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)
        assert digest.hexdigest() == sha256_file(path)


def test_a_full_disk_during_a_buffered_npy_write_is_one_clear_error(tmp_path, monkeypatch):
    """ENOSPC from write() (not a SIGBUS of a memory map, not numpy's 'N requested and M written')."""
    import numpy as np

    from invspread_edge_runtime import files
    from invspread_edge_runtime.files import write_npy

    target = tmp_path / "e.npy"
    target.write_bytes(b"good")
    written = []

    def full(fh, data, digest):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        fh.write(data)

    monkeypatch.setattr(files, "_write", full)
    with pytest.raises(InvedgeError) as caught, atomic_path(target) as tmp, open(tmp, "wb") as fh:
        write_npy(fh, np.ones((100, 8), np.float32))
    assert str(caught.value).startswith(f"disk full while writing {target}")
    assert "run the same command again" in str(caught.value)
    assert target.read_bytes() == b"good" and os.listdir(tmp_path) == ["e.npy"]


def test_leftovers_are_our_temporary_files_only(tmp_path):
    from invspread_edge_runtime.files import leftovers, remove_leftovers

    ours = [tmp_path / ".embeddings.npy.a1b2_c3.tmp", tmp_path / ".g.index.zz9.tmp"]
    others = [tmp_path / "photo.tmp", tmp_path / ".g.index.lock", tmp_path / "ids.json", tmp_path / ".hidden"]
    for path in ours + others:
        path.write_text("x")
    assert leftovers(tmp_path) == sorted(ours)
    assert leftovers(tmp_path, ["g.index"]) == [ours[1]]
    assert remove_leftovers(tmp_path, ["embeddings.npy"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [ours[1], *others])
    with atomic_path(tmp_path / "new.json") as tmp:  # what atomic_path makes is recognised
        assert leftovers(tmp_path, ["new.json"]) == [tmp]


def test_read_json_of_a_folder_is_one_clear_error(tmp_path):
    (tmp_path / "run.json").mkdir()
    with pytest.raises(InvedgeError, match="is a folder"):
        read_json(tmp_path / "run.json", "run.json")


def _folder(path, text):
    path.mkdir()
    (path / "done").write_text(text)
    return path


def _done(folder):
    return (folder / "done").is_file()


@pytest.mark.parametrize(
    "present, expected, left",
    [
        # killed between the two renames of replace_folder: the new folder moves in
        ({"aside": "old", "staging": "new"}, "completed an interrupted swap", "new"),
        # the same, with no finished new folder: the old one comes back
        ({"aside": "old"}, "restored the previous folder", "old"),
        # killed after the second rename: only the old copy is left to delete
        ({"aside": "old", "target": "new"}, "removed the old folder of a finished swap", "new"),
        # no swap begun: nothing is touched (the staging folder is the caller's)
        ({"target": "old", "staging": "new"}, None, "old"),
    ],
)
def test_recover_swap_finishes_or_undoes_a_killed_swap(tmp_path, present, expected, left):
    paths = {"target": tmp_path / "out", "aside": tmp_path / ".out.old", "staging": tmp_path / ".out.staging"}
    for name, text in present.items():
        _folder(paths[name], text)
    assert recover_swap(paths["target"], paths["aside"], paths["staging"], _done) == expected
    assert (paths["target"] / "done").read_text() == left
    assert not paths["aside"].exists()
    assert paths["staging"].exists() == (expected is None and "staging" in present)


def test_recover_swap_leaves_an_unfinished_target_and_its_aside_alone(tmp_path):
    target, aside = tmp_path / "out", _folder(tmp_path / ".out.old", "old")
    target.mkdir()  # there, but without the mark of a whole result: not ours to judge
    assert recover_swap(target, aside, tmp_path / ".out.staging", _done) is None
    assert (aside / "done").read_text() == "old" and target.is_dir()


# --- a swap that fails says so, and its leftover never blocks a rerun ------------------------------


def _failing_rmtree(fail_times: int):
    """shutil.rmtree that fails like an undeletable file (chattr +i, a read-only folder) `fail_times`
    times, then works: a root-proof stand-in for the permission bits root ignores."""
    import shutil

    real, calls = shutil.rmtree, {"n": 0}

    def rmtree(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= fail_times:
            raise PermissionError(errno.EPERM, "Operation not permitted", "ids.json")
        return real(path, *args, **kwargs)

    return rmtree


def test_a_swap_whose_old_folder_cannot_be_removed_fails_naming_it(tmp_path, monkeypatch):
    from invspread_edge_runtime import files

    target, new = _folder(tmp_path / "out", "old"), _folder(tmp_path / ".out.staging", "new")
    monkeypatch.setattr(files.shutil, "rmtree", _failing_rmtree(1))
    with pytest.raises(InvedgeError) as exc:
        files.replace_folder(new, target)
    message = str(exc.value)
    assert f"{target} was replaced" in message and str(tmp_path / ".out.old") in message
    assert "Operation not permitted (ids.json)" in message and "rm -rf" in message
    assert (target / "done").read_text() == "new"  # the new result is in place; the error says so
    # the next run (under the lock) removes the leftover, and a later swap goes through
    assert recover_swap(target, tmp_path / ".out.old", tmp_path / ".out.staging", _done) == (
        "removed the old folder of a finished swap"
    )
    files.replace_folder(_folder(tmp_path / ".out.staging", "newer"), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_leftover_that_cannot_be_removed_is_named_not_claimed_removed(tmp_path, monkeypatch):
    from invspread_edge_runtime import files

    target, aside = _folder(tmp_path / "out", "new"), _folder(tmp_path / ".out.old", "old")
    monkeypatch.setattr(files.shutil, "rmtree", _failing_rmtree(10))
    with pytest.raises(
        InvedgeError, match=r"the old copy of .*out, moved aside to .*\.out\.old, cannot be removed"
    ):
        recover_swap(target, aside, tmp_path / ".out.staging", _done)
    with pytest.raises(InvedgeError, match=r"\.out\.old"):  # and a new swap does not step over it
        files.replace_folder(_folder(tmp_path / ".out.staging", "newer"), target)
    assert (target / "done").read_text() == "new"


def test_a_new_folder_that_cannot_be_moved_in_puts_the_old_one_back(tmp_path, monkeypatch):
    from invspread_edge_runtime import files

    target, new = _folder(tmp_path / "out", "old"), _folder(tmp_path / ".out.staging", "new")
    real = os.rename

    def rename(src, dst):
        if str(src) == str(new):
            raise OSError(errno.EBUSY, "Device or resource busy", str(dst))
        return real(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(OSError, match="busy"):
        files.replace_folder(new, target)
    assert (target / "done").read_text() == "old" and not (tmp_path / ".out.old").exists()


def test_a_file_where_the_old_folder_goes_is_refused_not_deleted(tmp_path):
    from invspread_edge_runtime.files import replace_folder

    target, aside = _folder(tmp_path / "out", "old"), tmp_path / ".out.old"
    aside.write_text("not ours")
    with pytest.raises(InvedgeError, match=r"\.out\.old is not a folder"):
        replace_folder(_folder(tmp_path / ".out.staging", "new"), target)
    with pytest.raises(InvedgeError, match=r"\.out\.old is not a folder"):
        recover_swap(target, aside, tmp_path / ".out.staging", _done)
    assert aside.read_text() == "not ours" and (target / "done").read_text() == "old"


def test_a_folder_this_process_may_not_clean_is_found_before_any_work(tmp_path, monkeypatch):
    from invspread_edge_runtime.files import unremovable

    folder = tmp_path / "e.emb"
    (folder / "parts").mkdir(parents=True)
    assert unremovable(folder) is None
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).endswith("parts"))
    assert unremovable(folder) == folder / "parts"


@pytest.mark.parametrize(
    "state, hint",
    [("file", "the previous a.bin is intact"), ("none", "nothing was written to a.bin"), ("unknown", None)],
)
def test_disk_full_says_what_was_kept_only_when_it_is_known(tmp_path, state, hint):
    from invspread_edge_runtime.files import os_error

    target = tmp_path / "a.bin"
    if state == "file":
        target.write_bytes(b"good")
    error = os_error(OSError(errno.ENOSPC, "No space left on device"), target, atomic=state != "unknown")
    assert error.message == f"disk full while writing {target}"
    if hint is None:
        assert "intact" not in error.hint and "nothing" not in error.hint
    else:
        assert error.hint.endswith(hint)
