"""The bearer token: with --token-file every endpoint but /healthz and the page's own files needs it."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from .errors import ServeError


def check_token(request: Request, token: str | None) -> None:
    """401 unless `Authorization: Bearer TOKEN` matches (constant-time compare); no token set: open."""
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ServeError(
            401,
            "missing or wrong token" if given else "this service needs a token",
            "Send the header 'Authorization: Bearer TOKEN' with the token of the service's --token-file",
            headers={"WWW-Authenticate": "Bearer"},
        )
