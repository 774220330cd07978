"""Request bodies within limits: too many bytes is 413, a body not sent in time is 408.

Starlette has no body limit of its own: `limited` wraps the request's `receive` so that the body is
counted as it arrives (a lying or missing Content-Length changes nothing) and the whole body must
arrive within the read timeout. A half-sent upload therefore ends with a 408, never a stuck worker.

Images come as multipart form fields named `image`, or as a raw body: `Content-Type: image/jpeg`,
`image/png` or `image/webp` and the whole body is one image (no multipart parsing: the cheap way).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
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
RAW_TYPES = ("image/jpeg", "image/png", "image/webp")  # a body that is one image, as sent
RAW_NAME = "image"  # a raw body's name in answers and messages (multipart: the file name)


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
    deadline = asyncio.get_running_loop().time() + settings.read_timeout_s
    received = 0

    async def receive() -> Any:
        nonlocal received
        try:
            message = await by(deadline, request.receive())
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


async def by(deadline: float, awaitable: Awaitable[Any]) -> Any:
    """`awaitable`'s result, or asyncio.TimeoutError at `deadline` (the loop's clock). Python 3.11's
    timeout is a timer on the running task; wait_for, before it, a task of its own per call."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout_at(deadline):
            return await awaitable
    return await asyncio.wait_for(awaitable, max(0.0, deadline - asyncio.get_running_loop().time()))


async def read_images(
    request: Request, settings: ServeSettings, fields: tuple[str, ...] = ()
) -> tuple[list[Upload], dict[str, str]]:
    """The images of the body and the text fields named in `fields`: a multipart body's `image`
    files and form fields, or a raw image body and the query's parameters."""
    content_type = request.headers.get("content-type", "")
    if media_type(content_type) in RAW_TYPES:
        return [Upload(RAW_NAME, await read_raw(request, settings))], query_fields(request, fields)
    if not content_type.startswith("multipart/form-data"):
        raise ServeError(
            415,
            f"expected an image body ({', '.join(RAW_TYPES)}) or a multipart/form-data body, "
            f"got {content_type or 'no content type'}",
            "Send the image as the body with its type (curl -H 'Content-Type: image/jpeg' "
            "--data-binary @photo.jpg), or as form fields named 'image' (curl -F image=@photo.jpg)",
        )
    return await read_form(request, settings, fields)


def media_type(content_type: str) -> str:
    """`image/jpeg` of `Image/JPEG; charset=x`: the type without its parameters, lower case."""
    return content_type.partition(";")[0].strip().lower()


def query_fields(request: Request, fields: tuple[str, ...]) -> dict[str, str]:
    """The text fields of a raw image body: query parameters (`?id=...`)."""
    query = request.query_params
    return {name: value for name in fields if (value := query.get(name)) is not None}


async def read_raw(request: Request, settings: ServeSettings) -> bytes:
    """A raw image body, within the limits; an empty one is 400."""
    data = await read_body(request, settings)
    if not data:
        raise ServeError(400, "no image in the request: the body is empty", "Send the image file as the body")
    return data


async def read_form(
    request: Request, settings: ServeSettings, fields: tuple[str, ...]
) -> tuple[list[Upload], dict[str, str]]:
    """The `image` files of a multipart body, and the text fields named in `fields`."""
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


async def read_body(request: Request, settings: ServeSettings) -> bytes:
    """The whole body, within the byte limit and the read timeout."""
    try:
        return await limited(request, settings).body()
    except ClientDisconnect:
        raise ServeError(400, "the client closed the connection before sending the whole body") from None


async def read_json(request: Request, settings: ServeSettings) -> Any:
    """The JSON body, within the same limits."""
    data = await read_body(request, settings)
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
