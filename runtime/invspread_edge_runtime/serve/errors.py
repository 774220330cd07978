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


def queue_full(depth: int) -> ServeError:
    return ServeError(
        503,
        f"the service is busy ({depth} images waiting)",
        "Retry in a second",
        headers={"Retry-After": "1"},
    )
