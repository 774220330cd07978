"""Who may ask: `Guard`, the one check in front of every route, the page, its files and /docs.

- With --token-file, every request but `GET /healthz` carries the token: `Authorization: Bearer
  TOKEN` (programs), or HTTP Basic with the token as the password and any user name (browsers: a
  page, its files and its images cannot carry a header, so the browser asks once, in its own
  login dialog, and sends it with every request of the service's origin).
- Without a token (loopback only: settings.check refuses other hosts), only this machine's names
  are answered (localhost, 127.0.0.1, ::1 in the Host header): a web page whose name was made to
  resolve to 127.0.0.1 (DNS rebinding) cannot read the service's answers.
- A request that may change something (not GET or HEAD) sent by a browser from another page's
  origin is refused (403): browsers attach Basic credentials by themselves, so another site could
  otherwise post to the gallery in the user's name.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ServeError, starting
from .settings import is_loopback

OPEN_PATHS = frozenset({"/healthz"})  # compared with the exact path: anything else needs the token
SAFE_METHODS = frozenset({"GET", "HEAD"})
REALM = 'Basic realm="invedge serve", charset="UTF-8"'


class Guard:
    """ASGI middleware: answers the refusal of `refusal()` itself, or passes the request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await error_response(refused)(scope, receive, send)


def refusal(scope: Scope) -> ServeError | None:
    """Why this request is refused, or None. Reads the token of the running service."""
    app = scope["app"]
    headers = Headers(scope=scope)
    wants_token = app.state.settings.token_file is not None
    if not wants_token:
        host = headers.get("host")
        if host is not None and not loopback_host(host):
            return ServeError(
                421,
                f"this service answers only to this machine's own names, not to {host!r}",
                "Open it as http://127.0.0.1:PORT/, or serve it with --token-file to be reached by other names",
            )
    if scope.get("method", "GET") not in SAFE_METHODS and (site := other_site(headers)):
        return ServeError(
            403,
            f"a request from another web page ({site}) is refused",
            "Call the API from a program, or from this service's own page",
        )
    if not wants_token or scope["path"] in OPEN_PATHS:
        return None
    service = app.state.service
    if service is None:
        return starting()
    return check_token(headers, service.token)


def check_token(headers: Headers, token: str | None) -> ServeError | None:
    """401 unless the request carries `token` (Bearer, or Basic's password; constant-time compare)."""
    if token is None:
        return None
    given = presented(headers.get("authorization", ""))
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        return None
    return ServeError(
        401,
        "missing or wrong token" if "authorization" in headers else "this service needs a token",
        "Send the header 'Authorization: Bearer TOKEN' with the token of the service's --token-file "
        "(in a browser: log in with the token as the password)",
    )


def presented(authorization: str) -> str | None:
    """The token an Authorization header carries: Bearer's, or Basic's password; None when neither."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() != "basic":
        return None
    try:
        pair = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    _, colon, password = pair.partition(":")
    return password if colon else None


def other_site(headers: Headers) -> str | None:
    """The origin of a browser request sent by a page of another origin, else None (a program's
    request has neither header). Sec-Fetch-Site holds even behind a proxy that rewrites Host."""
    fetch_site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if fetch_site is not None:
        return None if fetch_site in ("same-origin", "none") else origin or fetch_site
    if origin is not None and urlsplit(origin).netloc != headers.get("host"):
        return origin
    return None


@functools.lru_cache(maxsize=64)  # a client sends the same Host every time: parsed once
def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine (localhost, 127.0.0.0/8, ::1)."""
    return is_loopback(hostname(host))


def hostname(host: str) -> str:
    """The name in a Host header (without port or brackets); "" when it is not one."""
    try:
        return urlsplit(f"//{host}").hostname or ""
    except ValueError:  # "[::1" and the like
        return ""


def error_response(error: ServeError) -> JSONResponse:
    """The one JSON error shape; a 401 challenges for both ways of sending the token."""
    response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
    if error.status == 401:
        response.headers.append("WWW-Authenticate", REALM)
        response.headers.append("WWW-Authenticate", "Bearer")
    return response
