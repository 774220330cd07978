"""What a `kill -9` leaves in a Milvus gallery, and how each next command reads it: a first build
stopped midway is incomplete (refused for use, shown by `index info`, finished by its rerun); an
`--overwrite` stopped midway keeps the old collection and leaves a temporary that the next build
removes (or, cut between the swap's two renames, puts back); an add or remove stopped midway is
named until its rerun finishes it. Real processes, killed at the test hook's pause points."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from milvus_testing import WAIT_S, embeddings_folder, error_line, one_line
from tiny import invedge as run_invedge

from invspread_edge_runtime.errors import IndexFileError, LockedError
from invspread_edge_runtime.milvus_store import state as records
from invspread_edge_runtime.milvus_store.address import parse_store
from invspread_edge_runtime.milvus_store.gallery import open_gallery

INVEDGE = Path(sys.executable).parent / "invedge"
pytestmark = pytest.mark.skipif(not INVEDGE.exists(), reason="the invedge console script is not installed")
BATCH = "500"  # 2 000 items: four batches, killed after the first


def invedge(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_invedge(*argv)
    out, err = capsys.readouterr()
    return code, out, err


@contextlib.contextmanager
def paused(tmp_path: Path, point: str, *argv: object) -> Iterator[subprocess.Popen]:
    """`invedge argv` in a process, yielded once it pauses at `point`; `kill -9` on the way out."""
    marker, release = tmp_path / f"paused-{point}", tmp_path / "never"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVEDGE_TEST_PAUSE", "INVEDGE_DEBUG"))}
    env |= {
        "OMP_NUM_THREADS": "1",
        "INVEDGE_MILVUS_BATCH": BATCH,
        "INVEDGE_TEST_PAUSE_AT": point,
        "INVEDGE_TEST_PAUSE_MARKER": str(marker),
        "INVEDGE_TEST_PAUSE_RELEASE": str(release),
        "INVEDGE_TEST_PAUSE_S": str(WAIT_S),
    }
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [str(INVEDGE), *map(str, argv)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=WAIT_S)
        yield proc
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL


def killed(tmp_path: Path, point: str, *argv: object) -> None:
    """Run `invedge argv` in a process, `kill -9` it where it pauses at `point`."""
    with paused(tmp_path, point, *argv):
        pass


@pytest.fixture(scope="module")
def emb(tmp_path_factory) -> Path:
    return embeddings_folder(tmp_path_factory.mktemp("emb") / "photos.emb", 2000)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return embeddings_folder(tmp_path_factory.mktemp("emb") / "small.emb", 300, seed=1, prefix="small")


def collections(store: str) -> list[str]:
    with open_gallery(store, "photos", incomplete_ok=True) as gallery:
        return sorted(gallery.client.list_collections())


def test_a_first_build_killed_midway_is_incomplete_everywhere_until_its_rerun(capsys, emb, small, tmp_path):
    store = f"milvus:{tmp_path / 'g.db'}"
    where = ("--store", store, "--collection", "photos")
    killed(tmp_path, "milvus-batch", "index", "build", emb, *where)

    code, out, err = invedge(capsys, "index", "info", *where, "--json")
    facts = json.loads(out)
    assert code == 0 and not facts["complete"] and facts["count"] == 500, err
    assert facts["status"] == "incomplete: its build stopped with 500 of 2,000 items written"
    warning = one_line(err)
    assert "photos" in warning and f"Finish it with 'invedge index build {emb} --store {store}" in warning
    code, out, _ = invedge(capsys, "index", "info", *where)
    assert "incomplete: its build stopped with 500 of 2,000 items written" in " ".join(out.split())

    for argv in (
        ["search", *where, "q.png"],
        ["index", "add", *where, small],
        ["index", "remove", *where, "img/00000.png"],
    ):
        code, _, err = invedge(capsys, *argv)
        line = error_line(err)
        assert code == 1 and "collection photos" in line and "is incomplete" in line, argv
        assert f"Finish it with 'invedge index build {emb}" in line
    from invspread_edge_runtime.serve.store_gallery import StoreGallery

    with pytest.raises(IndexFileError, match=r"photos .* is incomplete"):
        StoreGallery.open(store, "photos")  # `invedge serve --store` opens it so

    other = embeddings_folder(tmp_path / "other.emb", 100, seed=2, prefix="o")
    code, _, err = invedge(capsys, "index", "build", other, *where)  # would mix two folders' rows
    assert code == 1 and "pass --overwrite" in error_line(err)

    code, out, err = invedge(capsys, "index", "build", emb, *where, "--json")  # the rerun finishes it
    assert code == 0, err
    facts = json.loads(out)
    assert facts["complete"] and facts["count"] == 2000 and facts["status"] == "complete"
    code, out, err = invedge(capsys, "index", "add", *where, small)
    assert code == 0 and "now holds 2,300" in err, err


def test_an_overwrite_killed_midway_keeps_the_old_and_the_next_build_removes_its_temporary(
    capsys, emb, small, tmp_path
):
    store = f"milvus:{tmp_path / 'g.db'}"
    where = ("--store", store, "--collection", "photos")
    assert run_invedge("index", "build", small, *where) == 0
    killed(tmp_path, "milvus-batch", "index", "build", emb, *where, "--kind", "hnsw", "--overwrite")

    code, out, err = invedge(capsys, "index", "info", *where, "--json")
    facts = json.loads(out)
    assert code == 0 and facts["complete"] and facts["count"] == 300 and facts["kind"] == "flat", err
    assert (
        len(facts["temporaries"]) == 1 and "left by a build of photos that stopped" in facts["temporaries"][0]
    )
    temporary = facts["temporaries"][0].split(":")[0]
    assert temporary.startswith("photos__invedge_new_") and temporary in collections(store)
    code, _, err = invedge(capsys, "search", "--store", store, "--collection", temporary, "q.png")
    line = error_line(err)
    assert code == 1 and "is a temporary of a build of photos" in line and "--collection photos" in line

    code, out, err = invedge(capsys, "index", "build", small, *where, "--json")  # any build of it tidies
    assert code == 0 and f"removed {temporary}, left by a build of photos that stopped" in err, err
    assert collections(store) == ["photos"]
    assert json.loads(out)["count"] == 300


def test_an_overwrite_killed_between_its_renames_is_put_back_by_the_rerun(capsys, emb, small, tmp_path):
    store = f"milvus:{tmp_path / 'g.db'}"
    where = ("--store", store, "--collection", "photos")
    assert run_invedge("index", "build", small, *where) == 0
    killed(tmp_path, "milvus-swap", "index", "build", emb, *where, "--overwrite")

    code, _, err = invedge(capsys, "search", *where, "q.png")  # the name is missing: say what is left
    line = error_line(err)
    assert code == 1 and "no collection photos" in line and "stopped midway" in line
    assert f"invedge index build {emb} --store {store} --collection photos --overwrite" in line
    code, out, err = invedge(capsys, "index", "build", emb, *where, "--overwrite", "--json")
    assert code == 0 and "put photos back from photos__invedge_new_" in err, err
    assert json.loads(out)["count"] == 2000
    code, out, err = invedge(capsys, "index", "info", *where, "--json")
    assert code == 0 and json.loads(out)["temporaries"] == [] and json.loads(out)["complete"]
    client_names = []
    with open_gallery(store, "photos") as gallery:
        client_names = gallery.client.list_collections()
    assert client_names == ["photos"]


def test_an_add_or_a_remove_killed_midway_is_named_until_its_rerun(capsys, emb, small, tmp_path):
    store = f"milvus:{tmp_path / 'g.db'}"
    where = ("--store", store, "--collection", "photos")
    assert run_invedge("index", "build", small, *where) == 0
    killed(tmp_path, "milvus-batch", "index", "add", *where, emb)

    code, out, err = invedge(capsys, "index", "info", *where, "--json")
    facts = json.loads(out)
    assert code == 0 and facts["complete"] and facts["count"] == 800
    assert one_line(err) == f"warning: {facts['stopped_writes'][0]}"
    assert f"an 'index add' of {emb} into photos stopped midway" in facts["stopped_writes"][0]
    assert f"rerun 'invedge index add {' '.join(where)} {emb}' to finish it" in facts["stopped_writes"][0]
    with open_gallery(store, "photos") as gallery:  # complete: it serves, and says what stopped
        assert len(gallery) == 800 and len(gallery.stopped_writes()) == 1
    code, _, err = invedge(capsys, "index", "add", *where, emb)
    assert code == 0 and "added 1,500 items" in err and "now holds 2,300" in err, err

    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"img/{i:05d}.png" for i in range(1000)))
    killed(tmp_path, "milvus-remove", "index", "remove", *where, "--ids-file", ids)
    code, out, err = invedge(capsys, "index", "info", *where, "--json")
    facts = json.loads(out)
    assert facts["count"] == 1800 and "an 'index remove' of 1,000 ids" in facts["stopped_writes"][0]
    code, _, err = invedge(capsys, "index", "remove", *where, "--ids-file", ids)  # 500 of them are gone
    assert code == 0 and "removed 500 items" in err and "now holds 1,300" in err, err
    code, out, err = invedge(capsys, "index", "info", *where, "--json")
    assert json.loads(out)["stopped_writes"] == [] and not err.strip()
    code, _, err = invedge(capsys, "index", "remove", *where, "--ids-file", ids)  # finished: no longer
    assert code == 1 and "1000 ids not in the gallery" in error_line(err)


def test_on_a_server_a_running_build_is_left_alone_and_a_killed_one_is_not(
    milvus_server, capsys, emb, tmp_path
):
    server = milvus_server()
    where = ("--store", server.store, "--collection", "photos")
    with paused(tmp_path, "milvus-batch", "index", "build", emb, *where) as proc:
        code, out, err = invedge(capsys, "index", "info", *where, "--json")  # paused, alive: being built
        assert code == 0 and json.loads(out)["status"].startswith("being built: 500 of 2,000"), err
        code, _, err = invedge(capsys, "search", *where, "q.png")
        assert code == 1 and "is being built" in error_line(err) and f"pid {proc.pid}" in error_line(err)
        code, _, err = invedge(capsys, "index", "build", emb, *where, "--overwrite")
        assert code == 1 and "being built by another process" in error_line(err)
    code, out, err = invedge(capsys, "index", "info", *where, "--json")  # its pid is gone: stopped
    assert json.loads(out)["status"].startswith("incomplete: its build stopped with 500 of 2,000"), err
    code, out, err = invedge(capsys, "index", "build", emb, *where, "--json")
    assert code == 0 and json.loads(out)["count"] == 2000 and json.loads(out)["complete"], err


# --- the rule of alive writers and the records, without Milvus -------------------------------------------


def test_which_writers_are_alive():
    import socket

    lite, server = parse_store("milvus:x.db"), parse_store("milvus://db:19530")
    now = time.time()
    here, gone = socket.gethostname(), 2**22 + 12345  # a pid above Linux's default pid_max
    other = records.Writer("a", "build", host="elsewhere", pid=1, started=now, heartbeat=now)
    assert other.alive(server) and not other.alive(lite)  # a Lite folder is open in one process
    assert not other.alive(server, now=now + records.STALE_S + 1)  # silent too long
    assert not records.Writer("b", "add", host=here, pid=gone, heartbeat=now).alive(server)
    assert records.Writer("c", "add", host=here, pid=os.getppid(), heartbeat=now).alive(server)
    assert not records.Writer("d", "add", host=here, pid=os.getpid(), heartbeat=now).alive(server)


def test_records_read_back():
    assert records.read_state({}).complete  # built by an older invedge: taken as complete
    assert not records.read_state({records.BUILD: "{not json"}).complete
    state = records.read_state(
        records.building(10, "/e.emb")
        | records.temporary("photos", "new")
        | {"invedge.writer.x": '{"doing": 1', "invedge.writer.y": '{"pid": "abc"}', "invedge.writer.z": ""}
        | {"invedge.writer.w": '{"doing": "add", "pid": 7, "heartbeat": 1}'}
    )
    assert not state.complete and state.total == 10 and state.source == "/e.emb"
    assert [(w.token, w.doing, w.pid) for w in state.writers] == [
        ("w", "add", 7)
    ]  # damaged or emptied: left out
    assert state.temporary_of("photos__invedge_new_1") == "photos" and state.temporary_of("photos") is None
    lite = parse_store("milvus:x.db")
    assert (
        records.status(state, lite, "photos", 4) == "incomplete: its build stopped with 4 of 10 items written"
    )
    assert records.status(state, lite, "photos", 10) == (  # killed while indexing or measuring
        "incomplete: its build stopped with all 10 items written, before they were indexed and measured"
    )


def test_a_recording_is_dropped_when_the_write_ends_and_kept_when_it_fails():
    set_calls, drop_calls = [], []

    class Client:
        def alter_collection_properties(self, name, properties, timeout):
            set_calls.append(properties)

        def drop_collection_properties(self, name, property_keys, timeout):
            drop_calls.append(property_keys)

    store = parse_store("milvus:x.db")
    with records.Recording(Client(), store, "photos", "add", source="/a.emb", total=3) as rec:
        assert rec.writer.alive(store) and list(set_calls[0]) == [rec.writer.key]
    assert drop_calls == [[rec.writer.key]] and not rec.writer.alive(store)
    with pytest.raises(LockedError), records.Recording(Client(), store, "photos", "add") as failing:
        raise LockedError("stop")
    assert len(drop_calls) == 1 and not failing.writer.alive(store)  # kept: the trace of a stopped write
