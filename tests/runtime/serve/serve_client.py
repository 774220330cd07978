"""A small HTTP client for the serve tests (standard library only): JSON, multipart, raw replies."""

from __future__ import annotations

import http.client
import json
import select
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The error object every refusal carries: {"status", "message", "hint"}."""
        data = self.json()
        assert set(data) == {"error"}, data
        assert set(data["error"]) == {"status", "message", "hint"}, data
        assert data["error"]["status"] == self.status
        return data["error"]


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def get(url: str, path: str, headers: dict[str, str] | None = None) -> Reply:
    return call(url, "GET", path, headers=headers)


def post_json(url: str, path: str, obj: Any, headers: dict[str, str] | None = None) -> Reply:
    data = json.dumps(obj).encode()
    return call(url, "POST", path, data, {"Content-Type": "application/json", **(headers or {})})


def post_files(
    url: str,
    path: str,
    files: list[tuple[str, bytes]],
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """POST multipart: each (filename, bytes) as a field named `image`, plus text `fields`."""
    body, content_type = multipart(files, fields or {})
    return call(url, "POST", path, body, {"Content-Type": content_type, **(headers or {})})


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        chunks.append(head.encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def image_files(folder: Path, count: int) -> list[Path]:
    """The first `count` images of a folder tree, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))[:count]


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (it closes after refusing a body)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:  # it closed with our unread bytes in its buffer: what came before counts
        pass
    return b"".join(chunks)


def send_chunks_until_answered(sock: socket.socket, chunks: int = 40) -> None:
    """A chunked body of `chunks` × 64 KB (2.5 MB), sent until the server answers (a refusal mid-body)."""
    chunk = b"x" * 65536
    for _ in range(chunks):
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if select.select([sock], [], [], 0.05)[0]:
            return
