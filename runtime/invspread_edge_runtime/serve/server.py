"""Run the service with uvicorn: bind, announce the one serving line, drain on SIGTERM/Ctrl-C.

The socket is bound here (not by uvicorn) so that `--port 0` can announce the port it got and a
port in use, or an address that is not this host's, is the CLI's one-line error; it is bound before
the model loads (a wrong --host is refused at once) and listens only once everything is loaded.
Signals: uvicorn's own handlers stop accepting and wait for in-flight requests
(`timeout_graceful_shutdown`), then the lifespan stops the batcher; the signal is not raised again
afterwards, so a drained service exits 0.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from .. import console
from ..errors import InvedgeError
from .service import Service
from .settings import DRAIN_S, ServeSettings

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
QUIET_LOGGERS = ("python_multipart", "multipart")


def run(settings: ServeSettings) -> None:
    """Serve until SIGTERM or Ctrl-C; every startup problem is an InvedgeError (one line)."""
    from .app import create_app

    settings.check()
    for name in QUIET_LOGGERS:  # a client's malformed body is its 4xx, not a line on the server's stderr
        logging.getLogger(name).setLevel(logging.ERROR)
    with bind(settings.host, settings.port) as sock, Service.open(settings) as service:
        listen(sock, settings.host, settings.port)
        app = create_app(settings, service)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=DRAIN_S,
            timeout_keep_alive=5,
        )
        server = _Server(config, on_started=lambda: _announce(sock, service))
        server.run(sockets=[sock])
        if not server.started:
            raise InvedgeError("the server did not start", "See the lines above for why")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (0: a free port), not listening yet; or the one-line error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise InvedgeError(
            f"cannot resolve --host {host}: {exc.strerror}", "Give an address or a host name"
        ) from exc
    try:
        sock = socket.socket(family, kind, proto)  # an IPv6 address on a host without IPv6 fails here
    except OSError as exc:
        raise cannot_listen(exc, host, port) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise cannot_listen(exc, host, port) from exc
    return sock


def listen(sock: socket.socket, host: str, port: int) -> None:
    try:
        sock.listen(2048)
    except OSError as exc:
        raise cannot_listen(exc, host, port) from exc


def cannot_listen(exc: OSError, host: str, port: int) -> InvedgeError:
    """Why host:port cannot be served, with the next step that fits the reason."""
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return InvedgeError(
            f"{where}: the port is in use", "Choose another --port (0: any free port), or stop what uses it"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return InvedgeError(
            f"{where}: {host} is not an address of this host",
            "Give one of its addresses ('ip addr' lists them), 0.0.0.0 for all of them, or 127.0.0.1",
        )
    if exc.errno in (errno.EACCES, errno.EPERM) and 0 < port < 1024:
        return InvedgeError(
            f"{where}: ports below 1024 need privileges", "Choose --port 1024 or above (0: any free port)"
        )
    return InvedgeError(f"{where}: {exc.strerror or exc}", "Check --host and --port")


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(sock: socket.socket, service: Service) -> None:
    info = service.backend_info
    roots = len(service.images)
    images = f"images from {roots} --image-root" if roots else "images not served (no --image-root)"
    console.info(
        f"serving {url_of(sock)} (backend {info.name} on {info.device}, {info.precision}; "
        f"gallery {service.gallery.count()} items, {images})"
    )


class _Server(uvicorn.Server):
    """uvicorn's server, calling `on_started` once listening; the signal it drained on is not raised again."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self.on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
