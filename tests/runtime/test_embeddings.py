"""Embedding folders: written atomically in parts, resumable, verified on load."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from invspread_edge_runtime.embeddings.reader import load_embeddings
from invspread_edge_runtime.embeddings.writer import EmbeddingWriter
from invspread_edge_runtime.errors import DataError, EmbeddingsError

SPACE = {"space_id": "0123456789abcdef/8", "checkpoint_sha256": "0123456789abcdef" * 4, "embedding_dim": 8}
MODEL = {"path": "/models/model.onnx", "sha256": "aa" * 32, "precision": "fp32"}


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def writer(out, root, **kwargs) -> EmbeddingWriter:
    return EmbeddingWriter(out, space=SPACE, model=MODEL, root=root, **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_written_folder_reads_back(tmp_path, dtype):
    out, x = tmp_path / "photos.emb", vectors(25)
    w = writer(out, tmp_path, dtype=dtype, part_size=10)
    for start in range(0, 25, 7):
        w.add([f"img{i}.png" for i in range(start, min(start + 7, 25))], x[start : start + 7])
    w.add_failure("broken.jpg", "unreadable image broken.jpg: UnidentifiedImageError")
    manifest = w.finish({"backend": "ort-cpu"})
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "ids.json", "manifest.json"]
    emb = load_embeddings(out)
    assert len(emb) == 25 and emb.vectors.dtype == np.dtype(dtype) and emb.dim == 8
    np.testing.assert_allclose(np.asarray(emb.vectors, np.float32), x, atol=1e-3 if dtype == "float16" else 0)
    assert emb.ids == [f"img{i}.png" for i in range(25)]
    assert emb.space_id == SPACE["space_id"] and emb.manifest["model"]["sha256"] == MODEL["sha256"]
    assert manifest["failed_count"] == 1 and manifest["failed"][0]["id"] == "broken.jpg"
    assert emb.manifest["backend"] == "ort-cpu"
    assert emb.locations()[3] == str(tmp_path.absolute() / "img3.png")


def test_interrupted_run_resumes_from_its_parts(tmp_path):
    out, x = tmp_path / "e.emb", vectors(30)
    first = writer(out, tmp_path, part_size=8)
    for i in range(20):  # killed after 20 images: 2 full parts on disk, 4 images lost from the buffer
        first.add([f"img{i}"], x[i : i + 1])
    first.add_failure("bad", "unreadable")
    del first
    with pytest.raises(EmbeddingsError, match="unfinished"):
        load_embeddings(out)
    second = writer(out, tmp_path, part_size=8)
    assert second.resumed and second.done_ids == {f"img{i}" for i in range(16)}
    todo = [i for i in range(30) if f"img{i}" not in second.done_ids]
    second.add([f"img{i}" for i in todo], x[todo])
    second.finish()
    emb = load_embeddings(out)
    assert sorted(emb.ids, key=lambda s: int(s[3:])) == [f"img{i}" for i in range(30)]
    order = [int(s[3:]) for s in emb.ids]
    np.testing.assert_array_equal(emb.vectors, x[order])


def test_resume_with_another_model_or_dtype_is_refused(tmp_path):
    out = tmp_path / "e.emb"
    w = writer(out, tmp_path, part_size=2)
    w.add(["a", "b"], vectors(2))
    with pytest.raises(EmbeddingsError, match="another model file"):
        EmbeddingWriter(out, space=SPACE, model=MODEL | {"sha256": "bb" * 32}, root=tmp_path)
    with pytest.raises(EmbeddingsError, match="another dtype"):
        writer(out, tmp_path, dtype="float16")
    fresh = writer(out, tmp_path, dtype="float16", overwrite=True)
    assert not fresh.resumed


def test_finished_folder_needs_overwrite_and_foreign_folders_are_left_alone(tmp_path):
    out = tmp_path / "e.emb"
    w = writer(out, tmp_path)
    w.add(["a"], vectors(1))
    w.finish()
    with pytest.raises(EmbeddingsError, match="--overwrite"):
        writer(out, tmp_path)
    other = tmp_path / "holiday"
    other.mkdir()
    (other / "photo.jpg").write_bytes(b"x")
    with pytest.raises(EmbeddingsError, match="other files"):
        writer(other, tmp_path, overwrite=True)
    assert (other / "photo.jpg").exists()


def test_damaged_or_inconsistent_folders_are_rejected(tmp_path):
    out = tmp_path / "e.emb"
    w = writer(out, tmp_path)
    w.add(["a", "b", "c"], vectors(3))
    w.finish()
    data = bytearray((out / "embeddings.npy").read_bytes())
    data[-1] ^= 0xFF
    (out / "embeddings.npy").write_bytes(bytes(data))
    with pytest.raises(EmbeddingsError, match="damaged"):
        load_embeddings(out)
    load_embeddings(out, verify=False)  # the checksum is the only thing that catches this one
    (out / "ids.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(EmbeddingsError, match="inconsistent"):
        load_embeddings(out, verify=False)
    with pytest.raises(EmbeddingsError, match="not found"):
        load_embeddings(tmp_path / "missing.emb")


def test_nothing_embedded_is_an_error(tmp_path):
    w = writer(tmp_path / "e.emb", tmp_path)
    w.add_failure("a.jpg", "unreadable")
    with pytest.raises(DataError, match="no image could be embedded"):
        w.finish()


def finished(out, root, ids, seed=0, **kwargs):
    w = writer(out, root, **kwargs)
    w.add(list(ids), vectors(len(ids), seed))
    return w.finish()


def contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_builds_beside_the_old_folder_and_swaps_at_the_end(tmp_path):
    out = tmp_path / "e.emb"
    finished(out, tmp_path, ["old0", "old1"])
    before = contents(out)
    w = writer(out, tmp_path, overwrite=True, part_size=2)
    assert w.staged and w.work == tmp_path / ".e.emb.staging"
    w.add(["new0", "new1", "new2"], vectors(3, seed=1))  # one part written, in the staging folder
    assert contents(out) == before  # nothing of the old folder is touched before the end
    w.finish()
    assert load_embeddings(out).ids == ["new0", "new1", "new2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.emb"]  # no staging, no old copy


def test_an_overwrite_that_fails_leaves_the_old_folder_whole(tmp_path):
    out = tmp_path / "e.emb"
    finished(out, tmp_path, ["old0"])
    before = contents(out)
    w = writer(out, tmp_path, overwrite=True)
    w.add_failure("bad.jpg", "unreadable image /x/bad.jpg: cannot identify image file")
    with pytest.raises(DataError, match="no image could be embedded"):
        w.finish()
    assert contents(out) == before and load_embeddings(out).ids == ["old0"]


def test_an_interrupted_overwrite_resumes_in_its_staging_folder(tmp_path):
    out = tmp_path / "e.emb"
    finished(out, tmp_path, ["old0"])
    first = writer(out, tmp_path, overwrite=True, part_size=2)
    first.add(["n0", "n1"], vectors(2))
    del first  # killed: one part in the staging folder
    second = writer(out, tmp_path, overwrite=True, part_size=2)
    assert second.resumed and second.done_ids == {"n0", "n1"}
    other = writer(out, tmp_path, overwrite=True, dtype="float16")  # another run: starts over
    assert not other.resumed and other.done_ids == set()


@pytest.mark.parametrize("name", ["embeddings.npy", "ids.json", "manifest.json"])
def test_a_dead_writers_temporary_file_never_blocks_a_rerun(tmp_path, name):
    out = tmp_path / "e.emb"
    w = writer(out, tmp_path)
    w.add(["a"], vectors(1))
    w.flush()
    (out / f".{name}.k3j_9xq2.tmp").write_bytes(b"half a file")  # kill -9 inside atomic_path
    again = writer(out, tmp_path)
    assert again.resumed
    again.finish()
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "ids.json", "manifest.json"]


def test_a_swap_cut_short_by_a_crash_is_finished_or_undone(tmp_path):
    from invspread_edge_runtime.embeddings.folder import recover
    from invspread_edge_runtime.embeddings.layout import aside_path, staging_path

    out = tmp_path / "e.emb"
    finished(out, tmp_path, ["old0"])
    finished(staging_path(out), tmp_path, ["new0"], seed=1)
    out.rename(aside_path(out))  # killed between the two renames: no e.emb at all
    assert recover(out) == "completed an interrupted swap"
    assert load_embeddings(out).ids == ["new0"] and not aside_path(out).exists()

    out.rename(aside_path(out))  # the same, with the staging folder still unfinished
    staging_path(out).mkdir()
    (staging_path(out) / "parts").mkdir()
    assert recover(out) == "restored the previous folder"
    assert load_embeddings(out).ids == ["new0"]

    aside_path(out).mkdir()  # killed after both renames, before the old copy was deleted
    assert recover(out) == "removed the old folder of a finished swap" and not aside_path(out).exists()


def test_edited_ids_are_refused_not_trusted(tmp_path):
    out = tmp_path / "e.emb"
    finished(out, tmp_path, ["a.png", "b.png", "c.png"])
    ids = json.loads((out / "ids.json").read_text())
    ids[0], ids[1] = ids[1], ids[0]  # the same ids, two swapped: every count still matches
    (out / "ids.json").write_text(json.dumps(ids))
    with pytest.raises(EmbeddingsError, match="does not match its manifest"):
        load_embeddings(out, verify=False)


def _damage(out, what):
    manifest = json.loads((out / "manifest.json").read_text())
    if what == "manifest is a list":
        (out / "manifest.json").write_text("[1, 2]")
    elif what == "manifest count is text":
        (out / "manifest.json").write_text(json.dumps(manifest | {"count": "three"}))
    elif what == "manifest space is missing":
        manifest.pop("space")
        (out / "manifest.json").write_text(json.dumps(manifest))
    elif what == "manifest dtype is int64":
        (out / "manifest.json").write_text(json.dumps(manifest | {"dtype": "int64"}))
    elif what == "vectors are float64":
        np.save(out / "embeddings.npy", vectors(3).astype(np.float64))
    elif what == "vectors are 1-D":
        np.save(out / "embeddings.npy", vectors(3).reshape(-1))
    elif what == "vectors are pickled objects":
        np.save(out / "embeddings.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    elif what == "vectors are truncated":
        (out / "embeddings.npy").write_bytes((out / "embeddings.npy").read_bytes()[:70])
    elif what == "vectors are a folder":
        (out / "embeddings.npy").unlink()
        (out / "embeddings.npy").mkdir()
    elif what in ("ids are not a list", "ids are not strings", "ids are repeated", "ids are not UTF-8"):
        data = {
            "ids are not a list": b'{"a": 1}',
            "ids are not strings": b"[1, 2, 3]",
            "ids are repeated": b'["a", "a", "b"]',
            "ids are not UTF-8": b'["\xff\xfe", "b", "c"]',
        }[what]
        (out / "ids.json").write_bytes(data)
        manifest["ids_sha256"] = __import__("hashlib").sha256(data).hexdigest()  # consistent edits
        (out / "manifest.json").write_text(json.dumps(manifest))
    elif what == "ids are a folder":
        (out / "ids.json").unlink()
        (out / "ids.json").mkdir()


WRONG = [
    "manifest is a list",
    "manifest count is text",
    "manifest space is missing",
    "manifest dtype is int64",
    "vectors are float64",
    "vectors are 1-D",
    "vectors are pickled objects",
    "vectors are truncated",
    "vectors are a folder",
    "ids are not a list",
    "ids are not strings",
    "ids are repeated",
    "ids are not UTF-8",
    "ids are a folder",
]


@pytest.mark.parametrize("what", WRONG)
def test_every_kind_of_wrong_file_is_one_clear_error(tmp_path, what):
    out = tmp_path / "e.emb"
    finished(out, tmp_path, ["a", "b", "c"])
    _damage(out, what)
    with pytest.raises(EmbeddingsError) as caught:
        load_embeddings(out, verify=False)
    assert str(out) in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_where_the_folder_should_be_is_named_as_such(tmp_path):
    (tmp_path / "e.emb").write_text("x")
    with pytest.raises(EmbeddingsError, match="is a file, not an embeddings folder"):
        load_embeddings(tmp_path / "e.emb")


def test_a_rerun_retries_the_images_that_failed(tmp_path):
    out = tmp_path / "e.emb"
    first = writer(out, tmp_path, part_size=2)
    first.add(["a", "b"], vectors(2))
    first.add_failure("c", "unreadable image c: truncated")
    first.flush()
    del first  # interrupted; c is then fixed
    second = writer(out, tmp_path, part_size=2)
    assert second.done_ids == {"a", "b"}  # c is not remembered as done: it is tried again
    second.add(["c"], vectors(1, seed=3))
    manifest = second.finish()
    assert manifest["failed_count"] == 0 and sorted(load_embeddings(out).ids) == ["a", "b", "c"]


def test_retry_failed_keeps_a_finished_folder_and_adds_what_was_missing(tmp_path):
    out = tmp_path / "e.emb"
    w = writer(out, tmp_path)
    w.add(["a", "b"], vectors(2))
    w.add_failure("c", "unreadable image c: truncated")
    w.add_failure("d", "unreadable image d: truncated")
    w.finish()
    old = load_embeddings(out)
    old_vectors = np.array(old.vectors)
    retry = writer(out, tmp_path, retry_failed=True)
    assert retry.staged and retry.done_ids == {"a", "b"}
    retry.add(["c"], vectors(1, seed=5))  # c was fixed; d is still broken and not given again
    manifest = retry.finish()
    new = load_embeddings(out)
    assert new.ids == ["a", "b", "c"] and manifest["failed"] == [
        {"id": "d", "reason": "unreadable image d: truncated"}
    ]
    np.testing.assert_array_equal(np.asarray(new.vectors)[:2], old_vectors)
    with pytest.raises(EmbeddingsError, match="another model file"):
        EmbeddingWriter(
            out, space=SPACE, model=MODEL | {"sha256": "bb" * 32}, root=tmp_path, retry_failed=True
        )


def test_no_image_embedded_names_the_first_file_and_why(tmp_path):
    w = writer(tmp_path / "e.emb", tmp_path)
    w.add_failure("a.jpg", "unreadable image /photos/a.jpg: cannot identify image file")
    w.add_failure("b.jpg", "unreadable image /photos/b.jpg: truncated")
    with pytest.raises(DataError) as caught:
        w.finish()
    assert "2 unreadable; first: unreadable image /photos/a.jpg: cannot identify image file" in str(
        caught.value
    )


def test_a_full_disk_in_the_join_is_an_error_and_the_parts_survive(tmp_path, monkeypatch):
    import errno

    from invspread_edge_runtime import files
    from invspread_edge_runtime.errors import InvedgeError

    out = tmp_path / "e.emb"
    w = writer(out, tmp_path, part_size=4)
    w.add([f"i{n}" for n in range(10)], vectors(10))
    w.flush()
    real = files._write

    def full(fh, data, digest):
        if fh.name.endswith(".tmp") and ".embeddings.npy." in fh.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data, digest)

    monkeypatch.setattr(files, "_write", full)
    with pytest.raises(InvedgeError, match=r"disk full while writing .*embeddings\.npy"):
        w.finish()
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["parts"]  # no temporary file left behind
    again = writer(out, tmp_path, part_size=4)
    assert again.count == 10
    again.finish()
    assert len(load_embeddings(out)) == 10


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB tmpfs (root only; skipped elsewhere): a real full disk."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode(errors='replace').strip()})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_in_the_join_is_an_error_not_a_signal(tiny_disk):
    from invspread_edge_runtime.errors import InvedgeError

    out = tiny_disk / "e.emb"
    w = writer(out, tiny_disk, part_size=8192)
    x = np.random.default_rng(0).standard_normal((20_000, 8)).astype(np.float32)  # 640 KB of parts
    w.add([f"i{n}" for n in range(len(x))], x)
    w.flush()  # the parts fit; the joined copy (another 640 KB) does not
    with pytest.raises(InvedgeError, match="disk full while writing"):
        w.finish()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert writer(out, tiny_disk, part_size=8192).count == len(x)  # the parts are intact: resumable


# --- an --overwrite whose old folder cannot be removed: never a silent leftover ----------------------


def _rmtree_failing_on(suffix: str, monkeypatch) -> None:
    """shutil.rmtree (as files.py calls it) fails on folders named *suffix, like an undeletable file."""
    import shutil

    from invspread_edge_runtime import files

    real = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if str(path).endswith(suffix):
            raise PermissionError(errno.EPERM, "Operation not permitted", "ids.json")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(files.shutil, "rmtree", rmtree)


def test_an_overwrite_that_cannot_remove_the_old_folder_fails_and_the_next_run_cleans_up(
    tmp_path, monkeypatch
):
    from invspread_edge_runtime.embeddings.layout import aside_path
    from invspread_edge_runtime.errors import InvedgeError

    out = tmp_path / "e.emb"
    finished(out, tmp_path, ["old0"])
    with monkeypatch.context() as m:
        _rmtree_failing_on(".e.emb.old", m)
        with pytest.raises(
            InvedgeError, match=r"e\.emb was replaced, but its old copy, moved aside to .*\.e\.emb\.old"
        ):
            finished(out, tmp_path, ["new0"], seed=1, overwrite=True)
        assert load_embeddings(out).ids == ["new0"] and aside_path(out).is_dir()
        with pytest.raises(
            InvedgeError, match=r"cannot be removed.*rm -rf"
        ):  # named at once, before any work
            writer(out, tmp_path, overwrite=True)
    again = writer(out, tmp_path, overwrite=True)  # removable now: the leftover goes under the lock
    assert not aside_path(out).exists()
    again.add(["new1"], vectors(1, seed=2))
    again.finish()
    assert load_embeddings(out).ids == ["new1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.emb"]


def test_an_overwrite_of_a_folder_it_may_not_clean_is_refused_before_any_work(tmp_path, monkeypatch):
    from invspread_edge_runtime.embeddings.folder import check_output

    out = tmp_path / "e.emb"
    finished(out, tmp_path, ["old0"])
    monkeypatch.setattr(
        "os.access", lambda path, mode: str(path) != str(out)
    )  # as `chmod a-w e.emb` for a user
    for refuse in (lambda: check_output(out, overwrite=True), lambda: writer(out, tmp_path, overwrite=True)):
        with pytest.raises(
            EmbeddingsError, match=r"cannot replace .*e\.emb: .*is not writable.*chmod -R u\+w"
        ):
            refuse()
    assert load_embeddings(out).ids == ["old0"] and sorted(p.name for p in tmp_path.iterdir()) == ["e.emb"]


@pytest.fixture
def immutable(tmp_path):
    """chattr +i on a file (even root cannot delete it), undone at the end; skips where the file
    system or the user cannot set the flag."""
    import shutil
    import subprocess

    marked = []

    def mark(path):
        if (
            shutil.which("chattr") is None
            or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode
        ):
            pytest.skip("needs chattr +i (root on ext4/xfs/btrfs): a file nobody can delete")
        marked.append(path)

    yield mark
    if marked:  # wherever the marked file was moved to under tmp_path
        subprocess.run(["chattr", "-R", "-i", str(tmp_path)], capture_output=True)


def test_embed_overwrite_of_an_undeletable_folder_never_reports_success(
    tmp_path, image_folder, make_tiny_onnx, immutable, capsys
):
    """The real thing, through the CLI: a file of the old folder that cannot be deleted."""
    import subprocess

    from tiny import invedge

    model, out = make_tiny_onnx(tmp_path / "model.onnx"), tmp_path / "e.emb"
    images = image_folder / "class0"
    assert invedge("embed", model, images, "--out", out) == 0
    immutable(out / "ids.json")
    capsys.readouterr()
    assert invedge("embed", model, images, "--out", out, "--overwrite") == 1
    err = capsys.readouterr().err
    assert "✓" not in err and f"{out} was replaced, but its old copy" in err and ".e.emb.old" in err
    assert invedge("embed", model, images, "--out", out, "--overwrite") == 1  # named, before any work
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be removed" in lines[0] and ".e.emb.old" in lines[0], lines
    subprocess.run(["chattr", "-i", str(tmp_path / ".e.emb.old" / "ids.json")], check=True)
    assert invedge("embed", model, images, "--out", out, "--overwrite") == 0  # the leftover goes now
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".e.emb")) == [".e.emb.lock"]
