"""`invedge serve` on loopback: every endpoint, and every bad request of the contract answered with its
status and the one JSON error shape, the service healthy after each (docs: docs/SERVE_API.md)."""

from __future__ import annotations

import io
import json
import re
import socket
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from serve_client import call, get, image_files, post_files, post_json, read_all, send_chunks_until_answered
from tiny import EMBEDDING_ATOL, invedge

from invspread_edge_runtime import Embedder, Index

K_MAX = 20
READ_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def api(served, tiny_export, serve_index, image_folder):
    """One server for the read-only tests: small limits, so that each is easy to pass."""
    with served(
        tiny_export / "model.onnx", serve_index, "--backend", "ort-cpu", "--max-upload-mb", "1",
        "--max-pixels", "10000", "--k-max", K_MAX, "--read-timeout", READ_TIMEOUT_S,
        "--image-root", image_folder,
    ) as server:  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def queries(image_folder):
    return image_files(image_folder, 3)


def png(size: tuple[int, int] = (28, 28)) -> bytes:
    """A PNG of noise (it does not compress: cut anywhere, its pixels are missing)."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0]), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def assert_healthy(url: str) -> None:
    assert get(url, "/healthz").json() == {"status": "ok"}


# --- the endpoints -----------------------------------------------------------------------------


def test_health_readiness_and_info(api, tiny_export, serve_index):
    assert get(api.url, "/healthz").json() == {"status": "ok"}
    assert get(api.url, "/readyz").json() == {"status": "ready", "backend": "ort-cpu", "gallery": 40}
    info = get(api.url, "/v1/info").json()
    assert info["backend"]["name"] == "ort-cpu" and info["backend"]["precision"] == "fp32"
    assert info["model"]["embedding_dim"] == 32 and info["model"]["image_size"] == 28
    assert info["model"]["space_id"] == Index.load(serve_index).space_id
    assert info["gallery"] == {"items": 40, "kind": "flat", "path": str(serve_index)}
    assert info["batching"] == {"max_batch": 32, "max_wait_ms": 5.0, "queue": 256}
    assert info["limits"] == {"max_upload_mb": 1.0, "max_pixels": 10000, "k_max": K_MAX, "max_images": 256}
    assert re.match(
        r"serving http://127\.0\.0\.1:\d+ \(backend ort-cpu on cpu, fp32; gallery 40 items, images from 1 --image-root\)\n$",
        api.stderr(),
    )


def test_embed_gives_the_vectors_of_embedder_embed(api, tiny_export, queries):
    reply = post_files(api.url, "/v1/embed", [(p.name, p.read_bytes()) for p in queries])
    assert reply.status == 200, reply.body
    data = reply.json()
    assert [item["name"] for item in data["items"]] == [p.name for p in queries]
    with Embedder(tiny_export / "model.onnx", backend="ort-cpu") as embedder:
        expected = embedder.embed(queries)
        assert data["space_id"] == embedder.space_id and data["dim"] == 32
    got = np.array([item["embedding"] for item in data["items"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=EMBEDDING_ATOL)


def test_search_finds_what_invedge_search_prints(api, serve_index, queries, capsys):
    query = queries[1]
    reply = post_files(api.url, "/v1/search?k=5", [(query.name, query.read_bytes())])
    assert reply.status == 200, reply.body
    data = reply.json()
    capsys.readouterr()
    assert invedge("search", serve_index, query, "--k", 5, "--json", "-b", "ort-cpu") == 0
    printed = json.loads(capsys.readouterr().out)["results"][0]["neighbours"]
    (result,) = data["results"]
    assert data["k"] == 5 and data["space_id"] == Index.load(serve_index).space_id
    assert result["query"] == query.name
    assert [(n["rank"], n["id"]) for n in result["neighbours"]] == [(n["rank"], n["id"]) for n in printed]
    np.testing.assert_allclose(
        [n["score"] for n in result["neighbours"]], [n["score"] for n in printed], atol=2e-6
    )
    first = result["neighbours"][0]  # the query is a gallery image: it finds itself, with its file
    assert first["path"] == str(query) and first["image"] == f"/v1/gallery/{first['id']}/image"
    image = get(api.url, first["image"])
    assert image.status == 200 and image.body == query.read_bytes()


def test_search_by_vector_matches_search_by_image(api, queries):
    embedded = post_files(api.url, "/v1/embed", [("q.png", queries[0].read_bytes())]).json()
    vector, space = embedded["items"][0]["embedding"], embedded["space_id"]
    by_vector = post_json(api.url, "/v1/search?k=3", {"vector": vector, "space_id": space}).json()
    by_image = post_files(api.url, "/v1/search?k=3", [("q.png", queries[0].read_bytes())]).json()
    assert by_vector["results"][0]["query"] == "vector"
    assert [n["id"] for n in by_vector["results"][0]["neighbours"]] == [
        n["id"] for n in by_image["results"][0]["neighbours"]
    ]
    doubled = post_json(api.url, "/v1/search?k=3", {"vector": [2 * v for v in vector]}).json()  # normalised
    np.testing.assert_allclose(
        [n["score"] for n in doubled["results"][0]["neighbours"]],
        [n["score"] for n in by_vector["results"][0]["neighbours"]],
        atol=1e-5,
    )


def test_metrics_count_requests_batches_and_gallery(api, queries):
    post_files(api.url, "/v1/embed", [("q.png", queries[0].read_bytes())])
    text = get(api.url, "/metrics").body.decode()
    assert re.search(r'invedge_requests_total\{endpoint="/v1/embed",status="200"\} [1-9]', text)
    assert 'invedge_request_seconds_bucket{endpoint="/v1/embed"' in text
    assert re.search(r"invedge_batch_size_count [1-9]", text)
    assert "invedge_queue_depth 0.0" in text and "invedge_gallery_items 40.0" in text


def test_docs_work_offline(api):
    page = get(api.url, "/docs")
    assert page.status == 200 and b"/v1/search" in page.body
    assert b"<script" not in page.body and b"cdn" not in page.body.lower()  # nothing to fetch
    assert "/v1/gallery/{item_id}" in get(api.url, "/openapi.json").json()["paths"]


# --- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"plain text, not an image", 415, "not an image"),
        (png()[:400], 400, "damaged"),  # a PNG header, its pixels cut off
        (png((200, 200)), 413, "200 × 200 pixels"),  # 40 000 pixels > --max-pixels 10 000
    ],
    ids=["not-an-image", "corrupt", "too-many-pixels"],
)
def test_bad_images_are_refused(api, data, status, words):
    for path in ("/v1/embed", "/v1/search?k=2"):
        reply = post_files(api.url, path, [("upload.png", data)])
        assert reply.status == status, reply.body
        assert words in reply.error["message"] and "upload.png" in reply.error["message"]
    assert_healthy(api.url)


def test_too_many_bytes_is_413(api):
    """Refused on its Content-Length, before the body is read (a raw socket: a client that went on
    sending the rest would meet the closed connection, as with any server that refuses early)."""
    parts = urlsplit(api.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n" % (1024 * 1024 + 1)
        )
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"over the limit of 1 MB" in reply
    assert_healthy(api.url)


def test_too_many_bytes_without_content_length_is_413(api):
    """Chunked: the body is counted as it arrives, whatever the headers say."""
    parts = urlsplit(api.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        )
        head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        send_chunks_until_answered(sock)  # 2.5 MB, until the server answers
        assert read_all(sock).startswith(b"HTTP/1.1 413")
    assert_healthy(api.url)


@pytest.mark.parametrize("k", ["0", "-1", str(K_MAX + 1), "abc"])
def test_k_out_of_range_is_422(api, queries, k):
    reply = post_files(api.url, f"/v1/search?k={k}", [("q.png", queries[0].read_bytes())])
    assert reply.status == 422 and "k" in reply.error["message"]


def test_vector_of_wrong_dimension_is_422_and_of_another_space_409(api):
    reply = post_json(api.url, "/v1/search?k=3", {"vector": [0.1] * 31})
    assert reply.status == 422 and "dimension 31" in reply.error["message"]
    reply = post_json(api.url, "/v1/search?k=3", {"vector": [0.1] * 32, "space_id": "feedfacefeedface/32"})
    assert reply.status == 409 and "another embedding space" in reply.error["message"]
    for body in ({"vector": "no"}, {"vector": [[0.1] * 32]}, {"vector": [float("nan")] * 32}, [1, 2]):
        assert post_json(api.url, "/v1/search?k=3", body).status == 422
    assert (
        call(api.url, "POST", "/v1/search?k=3", b"{not json", {"Content-Type": "application/json"}).status
        == 400
    )


def test_unknown_ids_and_routes_are_404(api):
    assert "no image file" in get(api.url, "/v1/gallery/no-such-id/image").error["message"]
    assert get(api.url, "/v1/gallery/..%2F..%2Fetc%2Fpasswd/image").status == 404  # ids, never paths
    assert get(api.url, "/v1/nothing").error["status"] == 404


def test_requests_without_images_are_refused(api):
    assert post_files(api.url, "/v1/embed", [], {"note": "x"}).status == 400
    assert call(api.url, "POST", "/v1/embed", b"abc", {"Content-Type": "text/plain"}).status == 415


def test_a_half_sent_upload_times_out_with_408(api):
    parts = urlsplit(api.url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        )
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert READ_TIMEOUT_S <= time.monotonic() - started < READ_TIMEOUT_S + 10
    assert b"did not arrive within 1.5 s" in reply
    assert_healthy(api.url)
