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
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from .errors import ServeError, too_many_images
from .settings import ServeSettings

MAX_FILES = 256  # image fields in one request
MAX_FIELDS = 64  # text fields in one request
MAX_FIELD_KB = 64  # one text field
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
    most, flag = max_images(settings)
    try:
        async with body.form(
            max_files=most, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_KB * 1024
        ) as form:
            uploads = [
                Upload(part.filename or "image", await part.read())
                for part in form.getlist("image")
                if isinstance(part, UploadFile)
            ]
            texts = {name: value for name in fields if isinstance(value := form.get(name), str)}
    except ClientDisconnect:
        raise ServeError(400, "the client closed the connection before sending the whole body") from None
    except HTTPException as exc:  # the multipart parser's refusals (Starlette: 400 and its words)
        raise form_refused(str(exc.detail), most, flag) from None
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


def max_images(settings: ServeSettings) -> tuple[int, str | None]:
    """The most images one request may hold, and the flag that sets it (None: the fixed MAX_FILES)."""
    if settings.queue < MAX_FILES:  # more than the queue holds could never be embedded
        return settings.queue, f"--queue {settings.queue}"
    return MAX_FILES, None


def form_refused(detail: str, most: int, flag: str | None) -> ServeError:
    """A multipart body the parser refused: 413 past a count or size limit (sending the same again
    can never succeed), else 400 with the parser's reason."""
    if detail.startswith("Too many files"):
        return too_many_images(None, most, flag)
    if detail.startswith("Too many fields"):
        return ServeError(
            413,
            f"the request holds more than {MAX_FIELDS} text fields",
            "Send only the 'id' field beside the images",
        )
    if "exceeded maximum size" in detail:
        return ServeError(
            413,
            f"a text field of the request is over {MAX_FIELD_KB} KB",
            "Send the images as files (curl -F image=@photo.jpg)",
        )
    return ServeError(
        400,
        f"the multipart body is malformed ({detail.rstrip('.')})",
        "Send form fields (curl -F image=@photo.jpg)",
    )


def too_large(size: int, settings: ServeSettings) -> ServeError:
    return ServeError(
        413,
        f"the request body is {size / 1024 / 1024:.1f} MB or more, over the limit of {settings.max_upload_mb:g} MB",
        "Send fewer or smaller images, or start the service with a larger --max-upload-mb",
        CLOSE,
    )
