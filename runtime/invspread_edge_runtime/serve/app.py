"""`create_app(settings)`: the FastAPI app of `invedge serve` (routes in routes.py).

Here: the lifespan (start the batcher once listening, stop it after the drain), the one JSON
shape of every error, the metrics of every request, the page and its files (the map's from
explore/static), the page's map and duplicate views (explore.py), and /docs offline.
Every request, the page and /docs included, passes auth.Guard first (the token, the Host, the origin);
the hot POST endpoints are then called directly (lane.py), everything else through FastAPI's router.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..version import __version__
from .auth import Guard, error_response
from .docs import docs_page
from .errors import ServeError
from .explore import ExploreViews
from .explore import router as explore_router
from .lane import FastLane, lane_routes
from .routes import FAST, router
from .service import Service
from .settings import ServeSettings
from .watching import start_watch

STATIC = Path(__file__).resolve().parent / "static"
EXPLORE_STATIC = Path(__file__).resolve().parent.parent / "explore" / "static"  # the map's script and style
# FastAPI's own OpenTelemetry hooks (newer FastAPI) look up the global providers on every request;
# the service's metrics are its own (/metrics), so they are off where FastAPI has them.
NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: ServeSettings, service: Service | None = None) -> FastAPI:
    """The app; `service` already opened (the CLI opens it first), else opened by the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with contextlib.ExitStack() as stack:
            opened = service if service is not None else stack.enter_context(Service.open(settings))
            opened.batcher.start()
            app.state.watch = start_watch(opened, asyncio.get_running_loop())  # --watch: after the batcher
            app.state.service = opened
            try:
                yield
            finally:  # after uvicorn's drain: in-flight requests have their answers
                if app.state.watch is not None:  # before the batcher: its frames are embedded there
                    await asyncio.to_thread(app.state.watch.stop)
                await asyncio.to_thread(opened.batcher.stop)

    app = FastAPI(
        title="invedge serve",
        version=__version__,
        description="Embeddings and nearest-neighbour search of invspread-edge.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        **fastapi_options(),
    )
    app.state.service = None
    app.state.watch = None
    app.state.settings = settings
    app.state.explore = ExploreViews()  # the page's map and duplicate views, kept per gallery
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    app.include_router(explore_router)
    if EXPLORE_STATIC.is_dir():  # before /static, which would take these paths
        app.mount("/static/explore", StaticFiles(directory=EXPLORE_STATIC), name="explore-static")
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        index = STATIC / "index.html"
        if not index.is_file():
            raise ServeError(404, "the web page is not installed", "Reinstall invspread-edge-runtime[serve]")
        return HTMLResponse(index.read_text(encoding="utf-8"))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    app.add_middleware(FastLane, routes=lane_routes(router.routes, FAST))  # inside Guard: after its checks
    app.add_middleware(Guard)
    app.add_middleware(Timed)  # added last: the outermost, so refusals by Guard are counted too
    return app


def fastapi_options() -> dict[str, Any]:
    """Options only some FastAPI versions take: telemetry off where it exists."""
    takes = inspect.signature(FastAPI.__init__).parameters
    return {"telemetry": NO_TELEMETRY} if "telemetry" in takes else {}


async def _serve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServeError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own (an unknown route 404, a wrong method 405, a bad form 400) in our shape."""
    assert isinstance(exc, HTTPException)
    hint = "See the endpoints at /docs" if exc.status_code in (404, 405) else ""
    return error_response(ServeError(exc.status_code, str(exc.detail), hint, dict(exc.headers or {})))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A query parameter of the wrong type (k=abc): 422 naming it."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
    message = f"invalid {where or 'request'}: {first.get('msg', 'not valid')}"
    return error_response(ServeError(422, message, "See the parameters at /docs"))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug or a backend failure: 500 in the same shape (the service keeps running)."""
    import logging

    logging.getLogger("invedge.serve").error("internal error on %s", request.url.path, exc_info=exc)
    return error_response(
        ServeError(500, f"internal error ({type(exc).__name__}: {exc})", "This is a bug: please report it")
    )


class Timed:
    """ASGI middleware: every HTTP request counted and timed by its route (the route's path template)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            service = scope["app"].state.service
            if service is not None:  # the router put the matched route in the scope
                endpoint = getattr(scope.get("route"), "path", None) or "other"
                service.metrics.observe(endpoint, status, time.perf_counter() - started)
