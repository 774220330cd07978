"""`invedge index build|add|remove|info --store` and `invedge search --store`, end to end (on Milvus Lite and
on the real Milvus server), and the faults: an unreachable server, a Lite file in use by another process, a
server killed mid-insert (a `milvus-lite server`, and a real one of the test's own), a missing extra."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from milvus_testing import WAIT_S, error_line, free_port, one_line
from tiny import invedge as run_invedge

from invspread_edge_runtime.milvus_store.gallery import open_gallery

INVEDGE = Path(sys.executable).parent / "invedge"
pytestmark = pytest.mark.skipif(not INVEDGE.exists(), reason="the invedge console script is not installed")


def invedge(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_invedge(*argv)
    out, err = capsys.readouterr()
    return code, out, err


def env(**extra: str) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("INVEDGE_TEST_PAUSE")}
    values.update(OMP_NUM_THREADS="1", COLUMNS="200", **extra)
    values.pop("INVEDGE_DEBUG", None)
    return values


def process(*argv, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(INVEDGE), *map(str, argv)],
        cwd=cwd,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
    )


@pytest.fixture(scope="module")
def folders(tiny_export, image_folder, tmp_path_factory):
    """Two embeddings folders of the tiny model: class0 (10 images) and class1 (10 images)."""
    root = tmp_path_factory.mktemp("emb")
    for name in ("class0", "class1"):
        assert run_invedge("embed", tiny_export, image_folder / name, "--out", root / f"{name}.emb") == 0
    return root / "class0.emb", root / "class1.emb"


def test_build_search_add_remove_info(capsys, folders, image_folder, where):
    a, b = folders
    store, collection = where.store, where.name("photos")
    where = ("--store", store, "--collection", collection)
    code, out, err = invedge(capsys, "index", "build", a, *where, "--json")
    assert code == 0, err
    built = json.loads(out)
    assert built["count"] == 10 and built["kind"] == "flat" and built["collection"] == collection
    query = sorted((image_folder / "class0").iterdir())[0]
    code, out, err = invedge(capsys, "search", *where, query, "--k", "3", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["store"] == store and found["searcher"] == "milvus-flat"
    top = found["results"][0]["neighbours"][0]
    assert top["id"] == query.name and top["score"] == pytest.approx(1.0, abs=1e-4)
    code, out, err = invedge(capsys, "index", "add", *where, b, "--json")
    assert code == 0, err and json.loads(out)["added"] == 10 and json.loads(out)["count"] == 20
    code, out, err = invedge(capsys, "index", "add", *where, b, "--json")  # again: idempotent
    assert code == 0, err
    assert json.loads(out)["added"] == 0 and json.loads(out)["count"] == 20
    code, out, err = invedge(capsys, "index", "remove", *where, query.name, "--json")
    assert code == 0, err and json.loads(out)["removed"] == 1
    code, _, err = invedge(capsys, "index", "remove", *where, query.name)
    assert code == 1 and "1 id not in the gallery" in one_line(err)
    code, out, err = invedge(capsys, "index", "info", *where, "--json", "--ids")
    assert code == 0, err
    info = json.loads(out)
    assert info["count"] == 19 and len(info["ids"]) == 19 and query.name not in info["ids"]
    code, out, err = invedge(capsys, "index", "info", *where)
    assert code == 0 and collection in out and "19 × " in out
    code, _, err = invedge(capsys, "search", *where, query, "--k", "50")
    assert code == 1 and "k = 50 but the gallery holds 19 items" in one_line(err)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["index", "build", "E.emb", "--out", "x.index", "--store", "milvus:x.db", "--collection", "c"],
            "exactly one",
        ),
        (["index", "build", "E.emb"], "exactly one of --out and --store"),
        (["index", "build", "E.emb", "--store", "milvus:x.db"], "--collection is required"),
        (["index", "info", "--store", "milvus:x.db", "--collection", "9bad"], "Invalid --collection"),
        (["index", "info", "--store", "photos.db", "--collection", "c"], "Invalid --store"),
        (["search", "q.png", "--collection", "c"], "needs --store"),
    ],
)
def test_option_errors_are_one_line(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    code, _, err = invedge(capsys, *argv)
    assert code == 1 and fragment in one_line(err)


def test_unreachable_server_is_one_line_with_the_uri(capsys, folders):
    port = free_port()
    code, _, err = invedge(
        capsys, "index", "build", folders[0], "--store", f"milvus://127.0.0.1:{port}", "--collection", "c"
    )
    line = error_line(err)
    assert code == 1 and f"milvus://127.0.0.1:{port}" in line and "Check that the Milvus server runs" in line


def test_missing_extra_names_it(capsys, monkeypatch, tmp_path):
    real = builtins.__import__

    def no_pymilvus(name, *args, **kwargs):
        if name == "pymilvus" or name.startswith("pymilvus."):
            raise ImportError("No module named 'pymilvus'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pymilvus)
    code, _, err = invedge(
        capsys, "index", "info", "--store", f"milvus:{tmp_path / 'x.db'}", "--collection", "c"
    )
    line = one_line(err)
    assert code == 1 and "pymilvus" in line and "pip install 'invspread-edge-runtime[milvus]'" in line


def test_a_lite_file_reopened_by_a_new_process_and_in_use(capsys, folders, tmp_path):
    store = f"milvus:{tmp_path / 'shared.db'}"
    where = ("--store", store, "--collection", "shared")
    done = process("index", "build", folders[0], *where, "--kind", "hnsw", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = process("index", "info", *where, "--json", cwd=tmp_path)  # another process: the same gallery
    assert again.returncode == 0, again.stderr
    info = json.loads(again.stdout)
    assert info["count"] == 10 and info["kind"] == "hnsw" and info["recall_at_10"] is not None
    with open_gallery(store, "shared") as held:  # while this process holds the file, no other can open it
        assert len(held) == 10
        busy = process("index", "info", *where, cwd=tmp_path)
    line = one_line(busy.stderr)
    assert busy.returncode == 1 and "in use by another process" in line and "one process at a time" in line
    code, _, err = invedge(capsys, "index", "info", *where, "--json")  # a command here opens and lets go
    assert code == 0, err
    freed = process("index", "info", *where, "--json", cwd=tmp_path)  # closed: the file is free again
    assert freed.returncode == 0 and json.loads(freed.stdout)["count"] == 10, freed.stderr


def test_a_server_killed_mid_insert_then_a_rerun_completes(milvus_server, folders, tmp_path):
    server = milvus_server()
    where = ("--store", server.store, "--collection", "photos")
    marker, release = tmp_path / "paused", tmp_path / "release"
    proc = subprocess.Popen(
        [str(INVEDGE), "index", "build", folders[0], *where],
        cwd=tmp_path,
        env=env(
            INVEDGE_MILVUS_BATCH="4",  # 10 items: batches of 4, 4, 2
            INVEDGE_MILVUS_TIMEOUT=str(server.call_timeout_s),
            INVEDGE_TEST_PAUSE_AT="milvus-batch",
            INVEDGE_TEST_PAUSE_MARKER=str(marker),
            INVEDGE_TEST_PAUSE_RELEASE=str(release),
            INVEDGE_TEST_PAUSE_S=str(WAIT_S),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=WAIT_S)
        server.kill()  # after the first batch of 4: the connection drops mid-insert
        release.touch()
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    line = error_line(err)
    assert proc.returncode == 1
    assert "dropped after 4 of 10 items" in line and server.store in line
    assert "rerun the same command: re-adding is idempotent" in line
    restarted = milvus_server(server.data)  # the same data folder (a new port; the real one: its own)
    where = ("--store", restarted.store, "--collection", "photos")
    rerun = process("index", "build", folders[0], *where, cwd=tmp_path, INVEDGE_MILVUS_BATCH="4")
    assert rerun.returncode == 0, rerun.stderr
    info = process("index", "info", *where, "--json", "--ids", cwd=tmp_path)
    facts = json.loads(info.stdout)
    assert facts["count"] == 10 and len(facts["ids"]) == len(set(facts["ids"])) == 10
