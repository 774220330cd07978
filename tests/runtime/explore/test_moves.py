"""`invedge dedup --move-to` and `--undo`: the copies move out (paths kept, manifest first), come
back exactly, even after a run stopped midway; nothing is ever deleted or overwritten."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dedup_testing import embed_folder, photos_with_copies

from invspread_edge_runtime.errors import ConfigError, DataError, InvedgeError
from invspread_edge_runtime.explore import moves
from invspread_edge_runtime.explore.dedup import find_duplicates
from invspread_edge_runtime.explore.items import open_items
from invspread_edge_runtime.explore.moves import MANIFEST_NAME, move_duplicates, undo_moves
from invspread_edge_runtime.files import sha256_file

THRESHOLD = 0.98
INVEDGE = Path(sys.executable).parent / "invedge"


@pytest.fixture
def photos(image_folder, tmp_path):
    """A fresh copy per test (files move): the images with 3 planted copies, embedded."""
    root, copies = photos_with_copies(image_folder, tmp_path / "photos")
    return embed_folder(root, tmp_path / "photos.emb"), root, copies


def snapshot(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_move_then_undo_puts_every_file_back(photos, tmp_path):
    emb, root, _ = photos
    before = snapshot(root)
    found = find_duplicates(open_items(emb), THRESHOLD)
    dups = tmp_path / "dups"
    result = move_duplicates(found, dups)
    assert len(result.moved) == found.duplicates >= 3
    moved = {m["from"] for m in result.moved}
    kept = {found.items.locations[g.kept] for g in found.groups}
    assert not moved & kept and all((root / rel).exists() for rel in before if str(root / rel) not in moved)
    for move in result.moved:  # the layout under the root is kept
        rel = move["from"][len(str(root)) + 1 :]
        assert (dups / rel).is_file() and not (root / rel).exists()
    record = json.loads((dups / MANIFEST_NAME).read_text())
    assert record["state"] == "done" and len(record["moves"]) == len(result.moved)
    assert all(len(m["sha256"]) == 64 for m in record["moves"])
    assert len(snapshot(root)) + len(result.moved) == len(before)  # nothing deleted

    back = undo_moves(dups / MANIFEST_NAME)
    assert len(back.moved) == len(result.moved) and not back.left
    assert snapshot(root) == before
    assert json.loads((dups / MANIFEST_NAME).read_text())["state"] == "undone"
    assert [p.name for p in dups.rglob("*")] == [MANIFEST_NAME]  # the emptied sub-folders are gone


@pytest.mark.skipif(not INVEDGE.exists(), reason="the invedge console script is not installed")
def test_a_run_killed_midway_is_undone_from_its_manifest(photos, tmp_path):
    """Killed (os._exit, as kill -9) after the first file moved: the manifest is there, the undo
    brings that file back."""
    emb, root, _ = photos
    before = snapshot(root)
    env = dict(os.environ, OMP_NUM_THREADS="1") | {
        "INVEDGE_TEST_EXIT_AT": "dedup-move:1",
        "INVEDGE_TEST_EXIT_MARKER": str(tmp_path / "exited"),
    }
    command = [
        str(INVEDGE),
        "dedup",
        str(emb),
        "--threshold",
        str(THRESHOLD),
        "--move-to",
        str(tmp_path / "dups"),
    ]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 1 and (tmp_path / "exited").exists(), killed.stderr
    record = json.loads((tmp_path / "dups" / MANIFEST_NAME).read_text())
    assert record["state"] == "moving" and len(record["moves"]) >= 3  # written before the first move
    assert len(snapshot(root)) == len(before) - 1
    back = undo_moves(tmp_path / "dups" / MANIFEST_NAME)
    assert len(back.moved) == 1 and not back.left and snapshot(root) == before


def test_undo_never_overwrites_a_file_that_came_back_or_changed(photos, tmp_path):
    emb, _, _ = photos
    found = find_duplicates(open_items(emb), THRESHOLD)
    result = move_duplicates(found, tmp_path / "dups")
    first, second = result.moved[0], result.moved[1]
    shutil.copyfile(first["to"], first["from"])  # the user put one back by hand
    with open(second["to"], "ab") as fh:  # and edited another one in the dups folder
        fh.write(b"changed")
    back = undo_moves(tmp_path / "dups" / MANIFEST_NAME)
    assert len(back.moved) == len(result.moved) - 2
    assert any("stands at its original path" in line for line in back.left)
    assert any("changed since it was moved" in line for line in back.left)
    assert (tmp_path / "dups" / first["to"][len(str(tmp_path / "dups")) + 1 :]).is_file()


def test_a_folder_that_exists_and_is_not_empty_is_refused(photos, tmp_path):
    emb, _, _ = photos
    (tmp_path / "dups").mkdir()
    (tmp_path / "dups" / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        move_duplicates(find_duplicates(open_items(emb), THRESHOLD), tmp_path / "dups")
    assert [p.name for p in (tmp_path / "dups").iterdir()] == ["mine.txt"]


def test_the_cli_moves_and_undoes(photos, tmp_path, capsys):
    from tiny import invedge

    emb, root, _ = photos
    before = snapshot(root)
    capsys.readouterr()
    assert invedge("dedup", emb, "--threshold", THRESHOLD, "--move-to", tmp_path / "dups", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["moves"]["moved"] == data["counts"]["duplicates"] and not data["moves"]["left"]
    assert len(snapshot(root)) == len(before) - data["counts"]["duplicates"]
    assert invedge("dedup", "--undo", tmp_path / "dups") == 0  # the folder names its manifest
    assert "back to where they were" in capsys.readouterr().err
    assert snapshot(root) == before


def test_the_cli_refuses_a_bad_manifest_in_one_line(tmp_path, capsys):
    from tiny import invedge

    (tmp_path / "m.json").write_text('{"format": "other"}')
    capsys.readouterr()
    assert invedge("dedup", "--undo", tmp_path / "m.json") == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "not a manifest of 'invedge dedup --move-to'" in err
    assert "Traceback" not in err


def test_undo_refuses_a_crafted_manifest_whole_before_moving_anything(photos, tmp_path):
    emb, _, _ = photos
    result = move_duplicates(find_duplicates(open_items(emb), THRESHOLD), tmp_path / "dups")
    manifest = tmp_path / "dups" / MANIFEST_NAME
    record = json.loads(manifest.read_text())
    outside = tmp_path / "elsewhere" / "x.png"
    outside.parent.mkdir()
    shutil.copyfile(result.moved[0]["to"], outside)
    moved_now = snapshot(tmp_path / "dups")
    del moved_now[MANIFEST_NAME]
    crafted = [
        {**record["moves"][0], "to": str(outside)},  # a file outside the manifest's folder
        {**record["moves"][0], "to": str(tmp_path / "dups" / ".." / "elsewhere" / "x.png")},  # .. out of it
        {**record["moves"][0], "from": str(tmp_path / "elsewhere" / "y.png")},  # back to outside the root
    ]
    for entry in crafted:
        manifest.write_text(json.dumps(record | {"moves": [*record["moves"][1:], entry]}))
        with pytest.raises(DataError, match="nothing was moved"):
            undo_moves(manifest)
        assert {k: v for k, v in snapshot(tmp_path / "dups").items() if k != MANIFEST_NAME} == moved_now
        assert outside.is_file()
    manifest.write_text(json.dumps({k: v for k, v in record.items() if k != "root"}))
    with pytest.raises(DataError, match="records no images' folder"):
        undo_moves(manifest)
    assert {k: v for k, v in snapshot(tmp_path / "dups").items() if k != MANIFEST_NAME} == moved_now


def test_a_duplicate_whose_id_leads_out_of_the_images_folder_is_refused(photos, tmp_path):
    """An id such as `a/../../x.png` resolves outside the images' root: nothing moves anywhere."""
    emb, root, _ = photos
    found = find_duplicates(open_items(emb), THRESHOLD)
    group = found.groups[0]
    row = next(r for r in group.members if r != group.kept)
    outside = tmp_path / "outside.png"
    shutil.copyfile(found.items.locations[row], outside)
    found.items.locations[row] = str(root / "a" / ".." / ".." / "outside.png")
    before = snapshot(root)
    with pytest.raises(DataError, match="lies outside the images' folder"):
        move_duplicates(found, tmp_path / "dups")
    assert snapshot(root) == before and outside.is_file() and not (tmp_path / "dups").exists()


def test_a_move_never_overwrites_a_file_also_across_file_systems(tmp_path, monkeypatch):
    source, target = tmp_path / "a.png", tmp_path / "dups" / "a.png"
    source.write_bytes(b"moved")
    target.parent.mkdir()
    target.write_bytes(b"theirs")
    digest = sha256_file(source)
    with pytest.raises(InvedgeError, match="exists already: it was not overwritten"):
        moves._move(source, target, digest)
    real_link = os.link

    def no_hard_link_across(src, dst, **kwargs):  # as between two file systems: copy, then link in
        if Path(src) == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, **kwargs)

    monkeypatch.setattr(moves.os, "link", no_hard_link_across)
    with pytest.raises(InvedgeError, match="exists already: it was not overwritten"):
        moves._move(source, target, digest)
    assert source.read_bytes() == b"moved" and target.read_bytes() == b"theirs"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]  # no copy left behind
    moves._move(source, tmp_path / "dups" / "sub" / "a.png", digest)
    assert not source.exists() and (tmp_path / "dups" / "sub" / "a.png").read_bytes() == b"moved"


def test_a_move_to_inside_the_images_folder_is_refused(photos, capsys):
    """A later embed of the folder would find the copies there again."""
    from tiny import invedge

    emb, root, _ = photos
    before = snapshot(root)
    capsys.readouterr()
    assert invedge("dedup", emb, "--threshold", THRESHOLD, "--move-to", root / "dups") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "pick the copies up again" in err and f"Give a folder outside {root.resolve()}" in err
    with pytest.raises(ConfigError, match="inside the images' folder"):
        move_duplicates(find_duplicates(open_items(emb), THRESHOLD), root / "dups")
    assert snapshot(root) == before and not (root / "dups").exists()


def test_a_damaged_manifest_says_what_to_do(tmp_path, capsys):
    from tiny import invedge

    (tmp_path / MANIFEST_NAME).write_text("{not json")
    capsys.readouterr()
    assert invedge("dedup", "--undo", tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert "damaged" in err and "move them back by hand" in err
