"""`invedge serve` hands out no file it should not: gallery images only from its --image-root folders, as
regular image files reached without symbolic links, of the type they decode as, whatever an index file
says; and who may ask (the Host a browser was sent to, the page a request came from).

One server (`server`) serves `photos/`; tests change its files or edit its index file as anyone who can
write them could (the checksum recomputed), each test its own items. The token rule is in
test_serve_lifecycle.py and test_serve_page.py. The rules themselves: serve/files.py, docs/SERVE_API.md.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from serve_client import call, get, post_json
from tiny import invedge

from invspread_edge_runtime.index import index_file

SECRET = "password=hunter2"
MAX_UPLOAD_MB = 1


def image_root_args(photos: Path) -> tuple[object, ...]:
    """The flags that name the served folder."""
    return ("--image-root", photos)


@pytest.fixture(scope="module")
def place(tmp_path_factory, image_folder, tiny_export) -> dict[str, Path]:
    """photos/ (12 images, one of them a JPEG named .png, one in a sub-folder) embedded and indexed;
    beside it outside/ (a secret text file and an image) and photos-evil/ (a name that starts like it)."""
    base = tmp_path_factory.mktemp("served_files")
    photos = base / "photos"
    photos.mkdir()
    for image in sorted((image_folder / "class0").iterdir()):
        shutil.copyfile(image, photos / image.name)
    jpeg = next(p for p in sorted((image_folder / "class1").iterdir()) if p.suffix == ".jpg")
    shutil.copyfile(jpeg, photos / "disguised.png")
    (photos / "sub").mkdir()
    shutil.copyfile(next((image_folder / "class2").glob("*.png")), photos / "sub" / "deep.png")
    embeddings, index = base / "photos.emb", base / "photos.index"
    assert invedge("embed", tiny_export / "model.onnx", photos, "--out", embeddings, "-b", "ort-cpu") == 0
    assert invedge("index", "build", embeddings, "--out", index) == 0

    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    shutil.copyfile(next((image_folder / "class3").glob("*.png")), outside / "outside.png")
    (base / "photos-evil").mkdir()
    shutil.copyfile(outside / "outside.png", base / "photos-evil" / "x.png")
    # after embedding (embed would read them): what a gallery's folder may come to hold
    (photos / "notes.png").write_text(SECRET + "\n")
    (photos / "big.png").write_bytes(png_bytes() + b"\0" * (MAX_UPLOAD_MB * 1024 * 1024))
    os.mkfifo(photos / "pipe.png")
    (photos / "linked").symlink_to(outside, target_is_directory=True)
    return {"base": base, "photos": photos, "outside": outside, "index": index}


@pytest.fixture(scope="module")
def server(served, tiny_export, place):
    args = ("--backend", "ort-cpu", "--max-upload-mb", MAX_UPLOAD_MB, *image_root_args(place["photos"]))
    with served(tiny_export / "model.onnx", place["index"], *args) as running:
        yield running


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 200).save(buffer, "PNG")
    return buffer.getvalue()


def ids_of(index: Path) -> list[str]:
    return index_file.read_index(index).ids


def edit_location(index: Path, item_id: str, location: str) -> None:
    """What anyone who can write the index file can do: change a recorded path, recompute the checksum."""
    stored = index_file.read_index(index)
    locations = list(stored.locations)
    locations[stored.ids.index(item_id)] = location
    header = {key: value for key, value in stored.header.items() if key != "sections"}
    index_file.write_index(index, header, stored.vectors, stored.ids, locations, stored.faiss())


def image_url(item_id: str) -> str:
    return f"/v1/gallery/{item_id}/image"


def assert_not_served(url: str, item_id: str, why: str = "") -> None:
    reply = get(url, image_url(item_id))
    assert reply.status == 404, (reply.status, reply.headers, reply.body[:200])
    assert SECRET.encode() not in reply.body
    message = reply.error["message"]
    assert message.startswith(f"no image file on this server for gallery item {item_id!r}")
    assert why in message, message


def neighbour_of_itself(url: str, index: Path, item_id: str) -> dict:
    """The search result of an item's own vector: itself, first, with its path and image URL."""
    stored = index_file.read_index(index)
    vector = stored.vectors[stored.ids.index(item_id)].tolist()
    first = post_json(url, "/v1/search?k=1", {"vector": vector}).json()["results"][0]["neighbours"][0]
    assert first["id"] == item_id
    return first


def test_gallery_images_are_served_as_the_format_they_decode_as(server, place):
    photos = place["photos"]
    ids = ids_of(place["index"])
    a_png = next(i for i in ids if i.endswith(".png") and i != "disguised.png" and "/" not in i)
    for item_id, media_type in (
        (a_png, "image/png"),
        ("sub/deep.png", "image/png"),
        ("disguised.png", "image/jpeg"),
    ):
        reply = get(server.url, image_url(item_id))
        assert reply.status == 200, reply.body[:200]
        assert reply.body == (photos / item_id).read_bytes()
        assert reply.headers["content-type"] == media_type  # of the bytes, never of the suffix
        assert reply.headers["x-content-type-options"] == "nosniff"
    a_jpg = next(i for i in ids if i.endswith(".jpg"))
    assert get(server.url, image_url(a_jpg)).headers["content-type"] == "image/jpeg"
    assert neighbour_of_itself(server.url, place["index"], a_png)["image"] == image_url(a_png)


def test_a_gallery_image_replaced_by_a_symlink_is_not_served(server, place):
    photos, outside = place["photos"], place["outside"]
    to_text, to_image = [i for i in ids_of(place["index"]) if i.endswith(".jpg")][1:3]
    for item_id, target in ((to_text, outside / "secret.txt"), (to_image, outside / "outside.png")):
        (photos / item_id).unlink()
        (photos / item_id).symlink_to(target)
        assert_not_served(server.url, item_id, "symbolic link")
        found = neighbour_of_itself(server.url, place["index"], item_id)
        assert found["path"] == str(photos / item_id) and found["image"] is None  # no link to follow


def test_an_edited_index_cannot_make_the_server_read_another_file(server, place):
    """The recorded path of one item changed to files outside the root, through a link, through '..'."""
    base, photos, outside, index = place["base"], place["photos"], place["outside"], place["index"]
    victim = [i for i in ids_of(index) if i.endswith(".jpg")][3]
    for location, why in (
        (outside / "secret.txt", "not under an --image-root"),
        (outside / "outside.png", "not under an --image-root"),  # an image, but not one it was told to serve
        (f"{photos}/../outside/secret.txt", "not under an --image-root"),
        (base / "photos-evil" / "x.png", "not under an --image-root"),  # a name that starts like the root's
        ("/etc/passwd", "not under an --image-root"),
        ("photos/" + victim, "no absolute path"),  # relative to whatever the server's folder is
        (photos / "linked" / "secret.txt", "symbolic link"),  # a folder link inside the root
        (photos / "linked" / "outside.png", "symbolic link"),
    ):
        edit_location(index, victim, str(location))
        assert_not_served(server.url, victim, why)
        found = neighbour_of_itself(server.url, index, victim)
        assert found["path"] == str(location) and found["image"] is None


def test_only_regular_image_files_of_bounded_size_are_served(server, place):
    photos, index = place["photos"], place["index"]
    victim = [i for i in ids_of(index) if i.endswith(".jpg")][4]
    for location, why in (
        (photos / "pipe.png", "not a regular file"),  # a FIFO: opening it must not wait for a writer
        (photos / "sub", "not a regular file"),
        (photos / "big.png", "larger than"),
        (photos / "notes.png", "not an image"),
        (photos / "missing.png", "not on this server"),
        ("/dev/zero", "not under an --image-root"),
    ):
        edit_location(index, victim, str(location))
        assert_not_served(server.url, victim, why)


@pytest.mark.parametrize("path", ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "../../etc/passwd", "x%00"])
def test_ids_are_looked_up_never_used_as_paths(server, path):
    reply = get(server.url, f"/v1/gallery/{path}/image")
    assert reply.status == 404 and SECRET.encode() not in reply.body


def test_without_a_token_only_this_machines_names_are_answered(server):
    """A page whose name was made to resolve to 127.0.0.1 (DNS rebinding) cannot read the service."""
    port = server.url.rsplit(":", 1)[1]
    refused = call(server.url, "GET", "/v1/info", headers={"Host": f"attacker.example:{port}"})
    assert refused.status == 421 and "this machine's own names" in refused.error["message"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert call(server.url, "GET", "/v1/info", headers={"Host": host}).status == 200, host


def test_a_page_of_another_origin_cannot_change_the_gallery(server, place):
    image = (place["photos"] / "disguised.png").read_bytes()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="id"\r\n\r\nplanted\r\n'
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        + image
        + b"\r\n--b--\r\n"
    )
    form = {"Content-Type": "multipart/form-data; boundary=b"}
    for sent_by in (
        {"Origin": "http://attacker.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
    ):
        refused = call(server.url, "POST", "/v1/gallery", body, {**form, **sent_by})
        assert refused.status == 403 and "another web page" in refused.error["message"], sent_by
    assert "planted" not in ids_of(place["index"])
    port = server.url.rsplit(":", 1)[1]
    same = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    assert (
        call(server.url, "POST", "/v1/search?k=1", image, {"Content-Type": "image/png", **same}).status != 403
    )


# --- the rule itself, without a server -------------------------------------------------------------


def roots(*folders: Path, max_bytes: int = 1 << 20, max_pixels: int = 10**6):
    from invspread_edge_runtime.serve.files import ImageRoots

    return ImageRoots(list(folders), max_bytes, max_pixels)


def refusal(images, location: str, listed: bool = False) -> str:
    """Why `images` refuses to serve `location`; `listed`: search results still link it (what makes
    it refused is in its bytes, read only when it is asked for)."""
    from invspread_edge_runtime.serve.files import NotServed

    with pytest.raises(NotServed) as refused:
        images.read(location)
    assert images.may_serve(location) == listed
    return str(refused.value)


def test_a_root_reached_through_a_link_serves_the_paths_recorded_either_way(tmp_path):
    real = tmp_path / "disk" / "photos"
    real.mkdir(parents=True)
    (real / "a.png").write_bytes(png_bytes())
    (tmp_path / "photos").symlink_to(real, target_is_directory=True)  # the operator's own link
    with roots(tmp_path / "photos") as images:
        for location in (tmp_path / "photos" / "a.png", real / "a.png"):
            assert images.read(str(location)).media_type == "image/png" and images.may_serve(str(location))
    with roots(real) as images:  # the link is the operator's to name: the server does not guess it
        assert "not under" in refusal(images, str(tmp_path / "photos" / "a.png"))


def test_the_rule_refuses_what_it_should(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "a.png").write_bytes(png_bytes())
    (photos / "link.png").symlink_to(photos / "a.png")  # even to an image inside the root
    (photos / "sublink").symlink_to(photos / "sub", target_is_directory=True)
    (photos / "sub" / "b.png").write_bytes(png_bytes())
    (photos / "huge.png").write_bytes(png_bytes() + b"\0" * 2048)
    Image.new("L", (200, 200)).save(photos / "many.png")
    (photos / "notes.png").write_text("not an image\n")
    with roots(photos, max_bytes=2000, max_pixels=10_000) as images:
        assert images.read(str(photos / "sub" / "b.png")).data == png_bytes()
        assert "symbolic link" in refusal(images, str(photos / "link.png"))
        assert "symbolic link" in refusal(images, str(photos / "sublink" / "b.png"))
        assert "larger than" in refusal(images, str(photos / "huge.png"))
        assert "over --max-pixels" in refusal(images, str(photos / "many.png"), listed=True)
        assert "not an image" in refusal(images, str(photos / "notes.png"), listed=True)
        assert "not under" in refusal(images, str(photos))
        assert "no absolute path" in refusal(images, "")
        assert "no absolute path" in refusal(images, f"{photos}/a.png\0.txt")
    with roots(Path("/dev")) as images:  # an operator's odd root: devices are still not files
        assert "not a regular file" in refusal(images, "/dev/zero")
    with roots() as images:
        assert "without --image-root" in refusal(images, str(photos / "a.png"))


@pytest.mark.parametrize(
    ("folders", "words"),
    [
        (["missing"], "not found"),
        (["file"], "is not a folder"),
        (["/"], "would serve every image file"),
        (["photos"] * 17, "at most 16"),
    ],
)
def test_bad_image_roots_are_refused(tmp_path, folders, words):
    from invspread_edge_runtime.errors import ConfigError

    (tmp_path / "photos").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=words):
        roots(*(tmp_path / f for f in folders))
