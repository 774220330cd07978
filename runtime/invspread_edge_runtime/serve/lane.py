"""The short way in for the hot endpoints: POST /v1/embed, /v1/search and /v1/gallery go from
the guard straight to their endpoint functions (routes.FAST).

Profiled under load on small images, FastAPI's router, its dependency resolution (a fresh
Response per request) and its exception layers cost about as much Python per request as the
endpoint's own work. These endpoints take only the request, read their query parameters
themselves, answer a Response and refuse with ServeError alone (the multipart parser's refusals
included: uploads.py turns them into ServeErrors), so none of that is needed: the lane calls the
same functions the routes register and answers a ServeError in the one error shape; anything
else propagates to the app's handler for bugs (a 500), as from a route. Every other request, and
these paths with another method, goes through FastAPI; the routes stay registered, so /docs
describes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import error_response
from .errors import ServeError

Endpoint = Callable[[Request], Awaitable[Response]]


class FastLane:
    """ASGI middleware (inside auth.Guard): POSTs to the paths of `routes` go to their endpoints."""

    def __init__(self, app: ASGIApp, routes: dict[str, APIRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # as the router sets it: Timed labels the metrics by its path
        endpoint: Endpoint = route.endpoint
        try:
            response = await endpoint(Request(scope, receive, send))
        except ServeError as exc:
            response = error_response(exc)
        await response(scope, receive, send)


def lane_routes(routes: list[BaseRoute], endpoints: tuple[Endpoint, ...]) -> dict[str, APIRoute]:
    """The POST routes of `endpoints` (a router's own routes), by path; each endpoint must have one."""
    found = {
        route.path: route
        for route in routes
        if isinstance(route, APIRoute) and route.endpoint in endpoints and "POST" in route.methods
    }
    if len(found) != len(endpoints):  # a lane that silently takes nothing would hide a slow path
        raise RuntimeError(f"the lane found {sorted(found)} for {len(endpoints)} endpoints")
    return found
