"""Gallery changes through `invedge serve`: written to the index file under the CLI's lock, never losing
an update when `invedge index add` writes the same file at the same time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from serve_client import call, get, image_files, post_files
from tiny import invedge

from invspread_edge_runtime import Index


@pytest.fixture
def server(served, tiny_export, writable_index):
    with served(tiny_export / "model.onnx", writable_index, "--backend", "ort-cpu") as running:
        yield running


def test_add_and_delete_are_written_to_the_index_file(server, writable_index, image_folder):
    image = image_files(image_folder, 1)[0]
    added = post_files(server.url, "/v1/gallery", [(image.name, image.read_bytes())], {"id": "new-1"})
    assert added.status == 201, added.body
    assert added.json() == {"id": "new-1", "items": 41}
    on_disk = Index.load(writable_index)
    assert len(on_disk) == 41 and on_disk.ids[-1] == "new-1" and on_disk.locations[-1] == ""
    hits = post_files(server.url, "/v1/search?k=2", [(image.name, image.read_bytes())]).json()
    found = {n["id"]: n for n in hits["results"][0]["neighbours"]}
    assert "new-1" in found and found["new-1"]["image"] is None and found["new-1"]["path"] is None

    taken = post_files(server.url, "/v1/gallery", [(image.name, image.read_bytes())], {"id": "new-1"})
    assert taken.status == 409 and "already in the gallery" in taken.error["message"]

    gallery_id = on_disk.ids[0]  # "class0/img....jpg": ids may hold slashes
    assert call(server.url, "DELETE", f"/v1/gallery/{gallery_id}").json() == {"id": gallery_id, "items": 40}
    assert call(server.url, "DELETE", "/v1/gallery/new-1").json() == {"id": "new-1", "items": 39}
    assert call(server.url, "DELETE", "/v1/gallery/new-1").error["status"] == 404
    on_disk = Index.load(writable_index)
    assert len(on_disk) == 39 and "new-1" not in on_disk.ids and gallery_id not in on_disk.ids
    assert get(server.url, "/v1/info").json()["gallery"]["items"] == 39
    assert "invedge_gallery_items 39.0" in get(server.url, "/metrics").body.decode()


def test_bad_gallery_adds_are_refused(server, image_folder):
    data = image_files(image_folder, 1)[0].read_bytes()
    assert post_files(server.url, "/v1/gallery", [("a.png", data)]).status == 422  # no id
    assert post_files(server.url, "/v1/gallery", [("a.png", data)], {"id": ""}).status == 422
    assert post_files(server.url, "/v1/gallery", [("a.png", data)] * 2, {"id": "two"}).status == 422
    assert post_files(server.url, "/v1/gallery", [("a.png", b"not an image")], {"id": "x"}).status == 415
    assert get(server.url, "/v1/info").json()["gallery"]["items"] == 40


def test_a_concurrent_cli_add_and_a_service_add_both_land(
    server, writable_index, tiny_export, image_folder, tmp_path
):
    """`invedge index add` holds the lock mid-save while the service adds: the service waits, reloads, adds."""
    extra = tmp_path / "extra"
    extra.mkdir()
    for n, image in enumerate(image_files(image_folder, 2)):
        shutil.copyfile(image, extra / f"extra{n}{image.suffix}")
    embeddings = tmp_path / "extra.emb"
    assert invedge("embed", tiny_export / "model.onnx", extra, "--out", embeddings, "-b", "ort-cpu") == 0
    marker, release = tmp_path / "paused", tmp_path / "release"
    env = os.environ | {
        "INVEDGE_TEST_PAUSE_AT": "index-save",
        "INVEDGE_TEST_PAUSE_MARKER": str(marker),
        "INVEDGE_TEST_PAUSE_RELEASE": str(release),
    }
    cli = subprocess.Popen(
        [sys.executable, "-c", "import sys; from invspread_edge_runtime.cli import main; sys.exit(main())",
         "index", "add", str(writable_index), str(embeddings)],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "invedge index add did not reach its save"
    replies = []
    image = image_files(image_folder, 3)[2]
    adding = threading.Thread(
        target=lambda: replies.append(
            post_files(server.url, "/v1/gallery", [(image.name, image.read_bytes())], {"id": "by-service"})
        )
    )
    adding.start()
    time.sleep(0.5)
    assert not replies, "the service wrote while the CLI held the index lock"
    release.touch()
    assert cli.wait(60) == 0, cli.stderr.read()
    adding.join(60)
    assert replies[0].status == 201, replies[0].body
    assert replies[0].json()["items"] == 43
    ids = Index.load(writable_index).ids
    assert len(ids) == 43 and "by-service" in ids and sum(i.startswith("extra") for i in ids) == 2
    assert get(server.url, "/readyz").json()["gallery"] == 43
    # a CLI change alone: the service sees the new file at its next request (stat identity)
    assert invedge("index", "remove", writable_index, "by-service") == 0
    assert get(server.url, "/readyz").json()["gallery"] == 42
    assert post_files(server.url, "/v1/search?k=42", [(image.name, image.read_bytes())]).status == 200
