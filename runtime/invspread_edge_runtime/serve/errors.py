"""The service's errors: an HTTP status and the toolkit's one-line message and next step, as JSON.

Every error a request can cause is a `ServeError`; the app answers it with
`{"error": {"status", "message", "hint"}}`. Library errors (`InvedgeError`) get the status of what
went wrong from one table (`STATUSES`, through `from_invedge`): each rule of a gallery (the root
gallery.py) its own, anything else 503 (the store failed: the request may be retried).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import (
    DimensionMismatchError,
    DuplicateIdsError,
    EmptyGalleryError,
    GalleryError,
    InvedgeError,
    KOutOfRangeError,
    SpaceMismatchError,
    UnknownIdsError,
)

# The gallery rules a request can break, in the order they are looked up (a subclass before its base).
STATUSES: dict[type[InvedgeError], int] = {
    SpaceMismatchError: 409,  # a vector of another model than the gallery's
    EmptyGalleryError: 409,  # a search before any item was added
    DuplicateIdsError: 409,  # POST of an id already in the gallery
    UnknownIdsError: 404,  # DELETE of an id not in the gallery
    KOutOfRangeError: 422,  # k past the gallery's size
    DimensionMismatchError: 422,  # a vector of the wrong length
    GalleryError: 422,  # any other vector or id a gallery refuses
}


class ServeError(Exception):
    """A request the service refuses: `status`, a message, the next step and extra headers."""

    def __init__(
        self, status: int, message: str, hint: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "message": self.message, "hint": self.hint}}


def from_invedge(exc: InvedgeError, add: str = "") -> ServeError:
    """A library error as the service answers it: the status `STATUSES` gives its class, in the API's
    words; any other toolkit error is 503 (the store or the index file failed: retry later). `add`:
    the CLI command that adds items to the served gallery (default: the one the error names)."""
    status = next((status for kind, status in STATUSES.items() if isinstance(exc, kind)), None)
    if status is None:
        return ServeError(503, exc.message, exc.hint or "Retry later", {"Retry-After": "1"})
    return ServeError(status, *_in_api_words(exc, add))


@contextlib.contextmanager
def gallery_rules() -> Iterator[None]:
    """Within: a gallery rule a request broke (a `GalleryError`) becomes the service's answer."""
    try:
        yield
    except GalleryError as exc:
        raise from_invedge(exc) from exc


def _in_api_words(exc: InvedgeError, add: str = "") -> tuple[str, str]:
    """The message and next step for a client of the API: a request sends one vector and names one
    item, and k is a query parameter (the library's words name CLI flags, files and lists of ids)."""
    if isinstance(exc, SpaceMismatchError):
        return (
            f"the vector comes from another embedding space ({exc.space_id}) than the gallery ({exc.ours})",
            "Embed it with the gallery's model (GET /v1/info), or serve a gallery of its space",
        )
    if isinstance(exc, DimensionMismatchError):
        return (
            f"the vector has dimension {exc.dim}, the gallery {exc.ours}",
            "Send a vector of the gallery's dimension",
        )
    if isinstance(exc, KOutOfRangeError):
        return exc.message, f"Use k between 1 and {exc.count}"
    if isinstance(exc, EmptyGalleryError):
        return exc.message, f"Add items with POST /v1/gallery or {add or exc.add}"
    if isinstance(exc, DuplicateIdsError) and len(exc.ids) == 1:
        return f"id {exc.ids[0]!r} is already in the gallery", "Choose another id, or DELETE it first"
    if isinstance(exc, UnknownIdsError) and len(exc.ids) == 1:
        return f"no gallery item has the id {exc.ids[0]!r}", "See the ids in the search results"
    return exc.message, exc.hint or ""


def starting() -> ServeError:
    return ServeError(503, "the service is starting", "Retry in a few seconds", {"Retry-After": "1"})


def shutting_down() -> ServeError:
    return ServeError(503, "the service is shutting down", "Retry on another instance", {"Retry-After": "1"})


def queue_full(depth: int) -> ServeError:
    return ServeError(
        503,
        f"the service is busy ({depth} images waiting)",
        "Retry in a second",
        headers={"Retry-After": "1"},
    )


def too_many_images(count: int | None, limit: int, flag: str | None) -> ServeError:
    """413 for a request that can never be served, whatever the load: more images than `limit`
    (`flag`: the option that sets it, e.g. "--queue 2"; None: the service's fixed limit)."""
    sent = f"{count} images" if count is not None else f"more than {limit} images"
    if flag is None:
        return ServeError(
            413,
            f"the request holds {sent}; one request may hold at most {limit}",
            f"Send at most {limit} per request",
        )
    return ServeError(
        413,
        f"the request holds {sent}; this service takes at most {limit} per request ({flag})",
        f"Send at most {limit} per request, or start the service with a larger {flag.split()[0]}",
    )


def backend_failed(exc: BaseException, images: int) -> ServeError:
    """500 for a batch the backend could not embed: its requests fail, the service keeps running."""
    return ServeError(
        500,
        f"the backend failed on a batch of {images} images ({type(exc).__name__}: {exc})",
        "The service keeps running: retry; if it fails again, see the server's log (the device, its memory)",
    )
