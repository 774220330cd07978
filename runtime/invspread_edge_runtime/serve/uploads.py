"""Request bodies within limits: too many bytes is 413, a body not sent in time is 408.

Starlette has no body limit of its own: `limited` wraps the request's `receive` so that the body is
counted as it arrives (a lying or missing Content-Length changes nothing) and the whole body must
arrive within the read timeout. A half-sent upload therefore ends with a 408, never a stuck worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from .errors import ServeError
from .settings import ServeSettings

MAX_FILES = 256  # image fields in one request
CLOSE = {"Connection": "close"}  # the rest of a refused body is never read: end the connection


@dataclass
class Upload:
    name: str  # the file name the client gave ("image" when none)
    data: bytes


def limited(request: Request, settings: ServeSettings) -> Request:
    """The same request, its body cut off at the byte limit and the read timeout."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), settings)
    deadline = time.monotonic() + settings.read_timeout_s
    received = 0

    async def receive() -> Any:
        nonlocal received
        try:
            message = await asyncio.wait_for(request.receive(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ServeError(
                408,
                f"the request body did not arrive within {settings.read_timeout_s:g} s",
                "Send the whole request at once (check the network), then retry",
                CLOSE,
            ) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(received, settings)
        return message

    return Request(request.scope, receive)


async def read_images(
    request: Request, settings: ServeSettings, fields: tuple[str, ...] = ()
) -> tuple[list[Upload], dict[str, str]]:
    """The `image` files of a multipart body, and the text fields named in `fields`."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ServeError(
            415,
            f"expected a multipart/form-data body with image fields, got {content_type or 'no content type'}",
            "Send the images as form fields named 'image' (curl -F image=@photo.jpg)",
        )
    body = limited(request, settings)
    try:
        async with body.form(max_files=MAX_FILES, max_fields=64, max_part_size=64 * 1024) as form:
            uploads = [
                Upload(part.filename or "image", await part.read())
                for part in form.getlist("image")
                if isinstance(part, UploadFile)
            ]
            texts = {name: value for name in fields if isinstance(value := form.get(name), str)}
    except ClientDisconnect:
        raise ServeError(400, "the client closed the connection before sending the whole body") from None
    if not uploads:
        raise ServeError(400, "no image in the request", "Send the images as form fields named 'image'")
    return uploads, texts


async def read_json(request: Request, settings: ServeSettings) -> Any:
    """The JSON body, within the same limits."""
    try:
        data = await limited(request, settings).body()
    except ClientDisconnect:
        raise ServeError(400, "the client closed the connection before sending the whole body") from None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServeError(400, f"the body is not valid JSON ({exc})", 'Send {"vector": [...]}') from None


def too_large(size: int, settings: ServeSettings) -> ServeError:
    return ServeError(
        413,
        f"the request body is {size / 1024 / 1024:.1f} MB or more, over the limit of {settings.max_upload_mb:g} MB",
        "Send fewer or smaller images, or start the service with a larger --max-upload-mb",
        CLOSE,
    )
