"""The service's errors: an HTTP status and the toolkit's one-line message and next step, as JSON.

Every error a request can cause is a `ServeError`; the app answers it with
`{"error": {"status", "message", "hint"}}`. Library errors (`InvedgeError`) keep their message and
hint and get the status of what went wrong (`from_invedge`).
"""

from __future__ import annotations

from typing import Any

from ..errors import InvedgeError


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


def from_invedge(exc: InvedgeError, status: int) -> ServeError:
    return ServeError(status, exc.message, exc.hint or "")


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
