"""`invedge serve` as a process: the token rule, a full queue, the SIGTERM drain, and its bad flags
(each one line on stderr, exit 1, before anything listens)."""

from __future__ import annotations

import base64
import importlib.util
import signal
import socket
import time
from urllib.parse import urlsplit

import pytest
from serve_client import get, image_files, multipart, post_files
from tiny import invedge

TOKEN = "serve-test-token-123"


def test_the_token_guards_everything_but_health(served, tiny_export, serve_index, image_folder):
    data = image_files(image_folder, 1)[0].read_bytes()
    login = {"Authorization": "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()}
    with served(tiny_export, serve_index, "--backend", "ort-cpu", "--queue", "1", token=TOKEN) as server:
        assert get(server.url, "/healthz").status == 200
        guarded = ("/", "/static/page.js", "/docs", "/openapi.json", "/readyz", "/metrics", "/v1/info")
        explore = ("/static/explore/map.js", "/v1/duplicates?threshold=0.99", "/v1/map/neighbours?item=0")
        for path in guarded + explore:
            refused = get(server.url, path)
            assert refused.status == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert refused.error["message"] == "this service needs a token"
            wrong = get(server.url, path, {"Authorization": f"Bearer {TOKEN}x"})
            assert wrong.status == 401 and wrong.error["message"] == "missing or wrong token"
            assert get(server.url, path, {"Authorization": f"Basic {TOKEN}"}).status == 401
            assert get(server.url, path, server.headers).status == 200
            assert get(server.url, path, login).status == 200  # a browser's login: the token as password
        for path in ("/nope", "/healthz/", "/v1/gallery/x/image", "/static/nothing.js"):
            assert get(server.url, path).status == 401, path  # not even which routes exist
        assert post_files(server.url, "/v1/embed", [("a.png", data)]).status == 401
        # the browser sends its login by itself: another site's page may not post with it
        other_site = post_files(
            server.url, "/v1/embed", [("a.png", data)], headers={**login, "Origin": "http://evil.example"}
        )
        assert other_site.status == 403 and "another web page" in other_site.error["message"]
        assert post_files(server.url, "/v1/embed", [("a.png", data)], headers=server.headers).status == 200
        # --queue 1: two images never fit, whatever the timing: 413 naming the flag (not 503 "busy")
        never = post_files(server.url, "/v1/embed", [("a.png", data)] * 2, headers=server.headers)
        assert never.status == 413 and "retry-after" not in never.headers
        assert "--queue 1" in never.error["message"]


def test_sigterm_drains_a_request_in_flight(served, tiny_export, serve_index, image_folder):
    """SIGTERM while an upload is half sent: new connections are refused, the upload finishes, exit 0."""
    image = image_files(image_folder, 1)[0]
    body, content_type = multipart([(image.name, image.read_bytes())], {})
    server = served(tiny_export, serve_index, "--backend", "ort-cpu")
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = f"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body[:100])
        time.sleep(0.3)  # the request has reached the app
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):  # no longer listening
            socket.create_connection((parts.hostname, parts.port), timeout=5).close()
        sock.sendall(body[100:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply
    assert b'"embedding"' in reply
    assert server.stop() == 0  # already exiting: stop() waits and checks exit 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--host", "0.0.0.0"), "--host 0.0.0.0 serves beyond this machine, so it needs --token-file"),
        (("--host", "192.168.1.7"), "needs --token-file"),
        (("--max-batch", "0"), "--max-batch 0 is out of range. Use 1 to 1024"),
        (("--queue", "0"), "--queue 0 is out of range"),
        (("--max-wait-ms", "-1"), "--max-wait-ms -1 is out of range. Use a number above 0 and at most 1000"),
        (("--port", "70000"), "--port 70000 is out of range. Use 0 to 65535 (0: any free port)"),
        (("--token-file", "/nonexistent/token"), "token file not found: /nonexistent/token"),
    ],
)
def test_bad_flags_are_one_line(tiny_export, serve_index, capsys, args, words):
    assert invedge("serve", tiny_export, "--index", serve_index, "--port", "0", *args) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_a_missing_index_or_model_is_one_line(tiny_export, tmp_path, serve_index, capsys):
    assert invedge("serve", tiny_export, "--index", tmp_path / "none.index", "--port", "0") == 1
    err = capsys.readouterr().err
    assert "index not found" in err and err.count("\n") == 1, err
    assert invedge("serve", tmp_path / "no-model", "--index", serve_index, "--port", "0") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, err


def test_a_short_token_and_a_port_in_use_are_one_line(tiny_export, serve_index, tmp_path, capsys):
    short = tmp_path / "token"
    short.write_text("abc\n")
    assert invedge("serve", tiny_export, "--index", serve_index, "--token-file", short) == 1
    assert "holds no token of at least 8 characters" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert invedge("serve", tiny_export, "--index", serve_index, "--port", port, "-b", "ort-cpu") == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1, err


def test_without_the_extra_the_error_names_it(tiny_export, serve_index, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    assert invedge("serve", tiny_export, "--index", serve_index) == 1
    err = capsys.readouterr().err
    assert (
        "'invedge serve' needs the Python package 'fastapi'" in err
        and "pip install './runtime[serve]'" in err
    )
