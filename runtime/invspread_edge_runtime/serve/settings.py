"""What `invedge serve` was asked to do, checked once before anything is loaded."""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import bounds
from ..errors import ConfigError, InvedgeError
from .files import check_image_roots

if TYPE_CHECKING:  # pragma: no cover
    from ..watch.settings import WatchSettings

LOOPBACK_NAMES = ("localhost",)
# ServeSettings field → its flag's range (the numbers: invspread_edge_runtime/bounds.py)
SERVE_BOUNDS = {
    "port": bounds.PORT,
    "max_batch": bounds.SERVE_MAX_BATCH,
    "max_wait_ms": bounds.MAX_WAIT_MS,
    "queue": bounds.QUEUE,
    "max_upload_mb": bounds.MAX_UPLOAD_MB,
    "max_pixels": bounds.MAX_PIXELS,
    "decode_threads": bounds.DECODE_THREADS,
    "threads": bounds.THREADS,
    "k_max": bounds.K_MAX,
    "read_timeout_s": bounds.READ_TIMEOUT_S,
}
DRAIN_S = 10  # SIGTERM: seconds in-flight requests get to finish
TOKEN_FILE_MAX_BYTES = 64 * 1024  # the token is its first line: no more is read


@dataclass(frozen=True)
class ServeSettings:
    """The service's configuration (the CLI flags); `check()` refuses values outside what is allowed."""

    model: Path | str  # a file or export folder, or `triton:URL` (text: backends/triton.py `as_model`)
    index: Path | None = None  # a gallery index file, or
    store: str | None = None  # a Milvus store (milvus:FILE, milvus://HOST:PORT) and
    collection: str | None = None  # the collection in it holding the gallery
    consistency: str | None = None  # of the store's searches and counts (None: strong)
    host: str = "127.0.0.1"
    port: int = 8000
    token_file: Path | None = None
    backend: str = "auto"
    precision: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue: int = 256
    max_upload_mb: float = 20.0
    max_pixels: int = bounds.DEFAULT_MAX_PIXELS
    decode_threads: int = 4
    threads: int = 0  # the backend's CPU inference threads (0: one per core)
    k_max: int = 100
    read_timeout_s: float = 10.0  # a client that has not sent its whole body by then gets 408
    image_roots: tuple[Path, ...] = ()  # folders whose image files the gallery may serve (files.py)
    watch: WatchSettings | None = None  # --watch SOURCE: searched in the background (GET /v1/watch)

    def __post_init__(self) -> None:
        from ..backends.triton import as_model

        object.__setattr__(self, "model", as_model(self.model))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def check(self) -> None:
        """One-line errors for flags out of range, for the gallery not given exactly once, and for a
        non-loopback host without a token."""
        self.check_gallery()
        check_image_roots(self.image_roots)
        bounds.check_bounds(SERVE_BOUNDS, vars(self))  # each flag's range, nan and inf refused
        if self.watch is not None:
            self.watch.check()
        if self.token_file is None and not is_loopback(self.host):
            raise ConfigError(
                f"--host {self.host} serves beyond this machine, so it needs --token-file",
                "Put a secret in a file (one line) and pass --token-file FILE, or serve on 127.0.0.1",
            )

    def check_gallery(self) -> None:
        """Exactly one gallery: --index FILE, or --store S with --collection C."""
        from ..milvus_store.address import gallery_flags  # pymilvus-free: parsing only
        from ..milvus_store.collection import consistency_level

        address = gallery_flags(self.store, self.collection)  # a bad address: one line before the model
        if self.index is not None and address is not None:
            raise ConfigError(
                "Give the gallery once: --index FILE or --store S --collection C, not both",
                "Serve an index file with --index, or a Milvus collection with --store and --collection",
            )
        if self.index is None and address is None:
            raise ConfigError(
                "No gallery to serve. Give --index FILE or --store S --collection C",
                "Build one with 'invedge index build EMB --out FILE' (or --store S --collection C)",
            )
        if self.consistency is not None:
            if address is None:
                raise ConfigError(
                    "--consistency needs --store: it sets how fresh a Milvus collection's answers are",
                    "Drop --consistency, or serve a collection with --store S --collection C",
                )
            consistency_level(self.consistency)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: the only hosts served without a token."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> tuple[str, str | None]:
    """The token in `path` (its first line) and a warning when others may read the file."""
    from ..files import check_regular  # numpy comes with it: not at import (--help)

    check_regular(path, "token file")  # a FIFO would block the start forever, a device never end
    try:
        with open(path, "rb") as fh:
            data = fh.read(TOKEN_FILE_MAX_BYTES).decode("utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise InvedgeError(f"token file not found: {path}", "Check the --token-file path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvedgeError(
            f"cannot read token file {path}: {exc}", "Check the file and its permissions"
        ) from exc
    lines = data.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 8:
        raise ConfigError(
            f"token file {path} holds no token of at least 8 characters",
            "Write a secret on its first line, e.g. python -c 'import secrets; print(secrets.token_urlsafe())'",
        )
    warning = None
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        warning = f"token file {path} is readable by other users; chmod 600 {path}"
    return token, warning
