"""Raw image bodies (`Content-Type: image/jpeg|png|webp`, the whole body one image) and the binary
answer of /v1/embed (`Accept: application/octet-stream`): the same vectors, limits and statuses as
multipart and JSON (docs: docs/SERVE_API.md)."""

from __future__ import annotations

import io
import socket
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from serve_client import call, get, image_files, post_files, read_all, send_chunks_until_answered

from invspread_edge_runtime.serve.answers import wants_binary
from invspread_edge_runtime.serve.lane import lane_routes
from invspread_edge_runtime.serve.routes import FAST, router

TOKEN = "a-secret-token"
BINARY = "application/octet-stream"


@pytest.fixture(scope="module")
def server(served, tiny_export, serve_index):
    """One server with a token (the short way in for these endpoints still passes the guard)."""
    with served(
        tiny_export / "model.onnx", serve_index, "--backend", "ort-cpu", "--max-upload-mb", "1",
        "--max-pixels", "10000", token=TOKEN,
    ) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def photo(image_folder) -> Image.Image:
    with Image.open(image_files(image_folder, 1)[0]) as image:
        return image.convert("RGB")


def encoded(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[kind])
    return buffer.getvalue()


def post_raw(server, path: str, data: bytes, content_type: str = "image/jpeg", accept: str | None = None):
    headers = {"Content-Type": content_type, **server.headers} | ({"Accept": accept} if accept else {})
    return call(server.url, "POST", path, data, headers)


def assert_one_line(error: dict) -> None:
    assert error["hint"] and "\n" not in error["message"] + error["hint"]


@pytest.mark.parametrize("kind", ["jpeg", "png", "webp"])
def test_each_raw_type_embeds_as_its_multipart_upload(server, photo, kind):
    data = encoded(photo, kind)
    raw = post_raw(server, "/v1/embed", data, f"image/{kind}")
    assert raw.status == 200, raw.body
    form = post_files(server.url, "/v1/embed", [(f"q.{kind}", data)], headers=server.headers).json()
    answer = raw.json()
    assert set(answer) == {"space_id", "dim", "items"} and answer["space_id"] == form["space_id"]
    assert [item["name"] for item in answer["items"]] == ["image"]
    assert answer["items"][0]["embedding"] == form["items"][0]["embedding"]  # the same numbers, as written


def test_the_content_type_is_read_without_parameters_or_case(server, photo):
    reply = post_raw(server, "/v1/embed", encoded(photo, "png"), "Image/PNG; charset=binary")
    assert reply.status == 200 and reply.json()["dim"] == 32


def test_raw_search_answers_as_multipart(server, photo):
    data = encoded(photo, "jpeg")
    raw = post_raw(server, "/v1/search?k=3", data).json()
    form = post_files(server.url, "/v1/search?k=3", [("q.jpg", data)], headers=server.headers).json()
    assert raw["results"][0]["query"] == "image"
    assert raw["results"][0]["neighbours"] == form["results"][0]["neighbours"]
    assert raw["k"] == 3 and raw["space_id"] == form["space_id"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "image/gif", ""])
def test_another_body_type_is_415_with_the_next_step(server, photo, content_type):
    for path in ("/v1/embed", "/v1/search?k=2", "/v1/gallery?id=x"):
        reply = post_raw(server, path, encoded(photo, "jpeg"), content_type)
        assert reply.status == 415, reply.body
        error = reply.error
        assert "image/jpeg" in error["message"] and (content_type or "no content type") in error["message"]
        assert "Content-Type: image/jpeg" in error["hint"] and "-F image=@" in error["hint"]
        assert_one_line(error)


def test_bad_raw_bodies_are_refused_as_uploads_are(server, photo):
    not_image = post_raw(server, "/v1/embed", b"plain text, not an image", "image/png")
    assert not_image.status == 415 and "not an image" in not_image.error["message"]
    empty = post_raw(server, "/v1/embed", b"")
    assert empty.status == 400 and "empty" in empty.error["message"]
    big = post_raw(server, "/v1/embed", encoded(photo.resize((200, 200)), "png"), "image/png")
    assert big.status == 413 and "200 × 200 pixels" in big.error["message"]  # --max-pixels 10000
    for reply in (not_image, empty, big):
        assert_one_line(reply.error)


def test_a_raw_body_over_the_byte_limit_is_413(server):
    """Refused on its Content-Length before the body is read, and counted as it arrives when chunked."""
    parts = urlsplit(server.url)
    head = f"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"{head}Content-Type: image/jpeg\r\nContent-Length: {1024 * 1024 + 1}\r\n\r\n".encode())
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 413") and b"over the limit of 1 MB" in reply, reply[:300]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"{head}Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        send_chunks_until_answered(sock)  # 2.5 MB, until the server answers
        assert read_all(sock).startswith(b"HTTP/1.1 413")
    assert get(server.url, "/healthz").status == 200


def test_the_binary_answer_holds_the_json_answers_vectors(server, photo, image_folder):
    data = encoded(photo, "jpeg")
    binary = post_raw(server, "/v1/embed", data, accept=BINARY)
    answer = post_raw(server, "/v1/embed", data).json()
    assert binary.status == 200 and binary.headers["content-type"] == BINARY
    assert binary.headers["x-embedding-dim"] == "32" and binary.headers["x-embedding-count"] == "1"
    assert binary.headers["x-space-id"] == answer["space_id"]
    vectors = np.frombuffer(binary.body, dtype="<f4").reshape(1, 32)
    np.testing.assert_array_equal(vectors, np.asarray([answer["items"][0]["embedding"]], dtype=np.float32))

    files = [
        (path.name, path.read_bytes()) for path in image_files(image_folder, 3)
    ]  # multipart in, rows out
    rows = post_files(server.url, "/v1/embed", files, headers={"Accept": BINARY, **server.headers})
    as_json = post_files(server.url, "/v1/embed", files, headers=server.headers).json()
    assert rows.headers["x-embedding-count"] == "3" and len(rows.body) == 3 * 32 * 4
    expected = np.asarray([item["embedding"] for item in as_json["items"]], dtype=np.float32)
    np.testing.assert_array_equal(np.frombuffer(rows.body, dtype="<f4").reshape(3, 32), expected)


@pytest.mark.parametrize(
    ("accept", "binary"),
    [
        (BINARY, True),
        ("application/octet-stream;q=0.9, application/json;q=0.5", True),
        ("application/json;q=0.1, Application/Octet-Stream", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        ("application/json, application/octet-stream", False),  # a tie: JSON, the default
        ("application/octet-stream;q=0", False),
        ("application/octet-stream;q=abc", False),
        ("text/html", False),  # neither: JSON, as before
    ],
)
def test_accept_chooses_the_answer(accept, binary):
    assert wants_binary(accept) is binary


def test_the_hot_endpoints_take_the_short_way_in():
    lane = lane_routes(router.routes, FAST)
    assert {path: route.endpoint.__name__ for path, route in lane.items()} == {
        "/v1/embed": "embed",
        "/v1/search": "search",
        "/v1/gallery": "add_item",
    }


def test_accept_negotiation_over_http(server, photo):
    data = encoded(photo, "jpeg")
    for accept, content_type in [
        (BINARY, BINARY),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("application/octet-stream;q=0.5, application/json", "application/json"),
    ]:
        reply = post_raw(server, "/v1/embed", data, accept=accept)
        assert reply.status == 200 and reply.headers["content-type"] == content_type, accept
        assert reply.headers["vary"] == "Accept"
    refused = post_raw(server, "/v1/embed", b"not an image", accept=BINARY)  # errors stay JSON
    assert refused.status == 415 and refused.headers["content-type"] == "application/json"
    assert refused.error["status"] == 415


def test_the_token_and_the_metrics_hold_on_the_raw_path(server, photo):
    reply = call(server.url, "POST", "/v1/embed", encoded(photo, "jpeg"), {"Content-Type": "image/jpeg"})
    assert reply.status == 401
    assert post_raw(server, "/v1/embed", encoded(photo, "jpeg")).status == 200
    metrics = get(server.url, "/metrics", server.headers).body.decode()
    assert 'invedge_requests_total{endpoint="/v1/embed",status="200"}' in metrics
    assert 'invedge_requests_total{endpoint="other",status="401"}' in metrics
    assert (
        call(server.url, "GET", "/v1/embed", headers=server.headers).status == 405
    )  # other methods: FastAPI's


def test_a_raw_gallery_add_takes_its_id_from_the_query(served, tiny_export, writable_index, photo):
    with served(tiny_export / "model.onnx", writable_index, "--backend", "ort-cpu") as running:
        data = encoded(photo, "png")
        added = call(running.url, "POST", "/v1/gallery?id=raw%2F1", data, {"Content-Type": "image/png"})
        assert added.status == 201, added.body
        assert added.json() == {"id": "raw/1", "items": 41}
        hits = call(running.url, "POST", "/v1/search?k=2", data, {"Content-Type": "image/png"}).json()
        assert "raw/1" in [hit["id"] for hit in hits["results"][0]["neighbours"]]  # tied with its source
        taken = call(running.url, "POST", "/v1/gallery?id=raw%2F1", data, {"Content-Type": "image/png"})
        assert taken.status == 409
        no_id = call(running.url, "POST", "/v1/gallery", data, {"Content-Type": "image/png"})
        assert no_id.status == 422 and "?id=" in no_id.error["hint"]
        assert_one_line(no_id.error)
