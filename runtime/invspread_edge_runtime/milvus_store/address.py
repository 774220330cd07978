"""Where a gallery lives in Milvus: `--store milvus:FILE.db` (Milvus Lite) or `milvus://HOST:PORT`.

Milvus Lite (milvus-lite 3: a Python engine on NumPy and faiss; a Milvus server is the C++ engine)
runs in this process, on a folder named like a file ending in .db (pymilvus recognises a local store
by that ending). A server address becomes pymilvus' URI:
`milvus://` → `http://` (plain gRPC), `milvus+https://` → `https://` (TLS). The token for a
server comes from MILVUS_TOKEN when the client connects: never part of the address, never shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

SYNTAX = "Use milvus:FILE.db (Milvus Lite), milvus://HOST:PORT or milvus+https://HOST:PORT"
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?$")
_COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COLLECTION_MAX = 255  # Milvus' limit on a collection name
DEFAULT_PORT = 19530


@dataclass(frozen=True)
class StoreAddress:
    """A parsed `--store`: `uri` for pymilvus, `shown` for messages, `path` for Milvus Lite."""

    uri: str
    shown: str
    local: bool
    path: Path | None = None


def parse_store(text: str) -> StoreAddress:
    """`milvus:PATH.db`, `milvus://HOST:PORT` or `milvus+https://HOST:PORT`; ConfigError otherwise."""
    if isinstance(text, StoreAddress):
        return text
    text = (text or "").strip()
    for scheme, transport in (("milvus://", "http"), ("milvus+https://", "https")):
        if text.startswith(scheme):
            rest = text[len(scheme) :]
            if "@" in rest:
                raise ConfigError(
                    f"--store {scheme}… must not hold credentials",
                    "Put the token in the MILVUS_TOKEN environment variable",
                )
            match = _HOST_PORT.match(rest)
            if match is None or (match.group(2) and not 0 < int(match.group(2)) < 65536):
                raise ConfigError(f"Invalid --store {text!r}: not HOST:PORT", SYNTAX)
            host, port = match.group(1), int(match.group(2) or DEFAULT_PORT)
            return StoreAddress(f"{transport}://{host}:{port}", f"{scheme}{host}:{port}", local=False)
    if text.startswith("milvus:") and not text.startswith("milvus:/" + "/"):
        raw = text[len("milvus:") :]
        if not raw:
            raise ConfigError("Invalid --store 'milvus:': no file given", SYNTAX)
        path = Path(raw).expanduser()
        if path.suffix != ".db":
            raise ConfigError(
                f"Invalid --store {text!r}: a Milvus Lite file must end in .db",
                f"Use milvus:{path.with_name(path.name + '.db')}",
            )
        absolute = path.absolute()
        return StoreAddress(str(absolute), f"milvus:{raw}", local=True, path=absolute)
    raise ConfigError(f"Invalid --store {text!r}", SYNTAX)


def gallery_flags(store: str | None, collection: str | None) -> StoreAddress | None:
    """`--store` and `--collection` of every verb, together or not at all: the address, or None (a file)."""
    if store is None:
        if collection is not None:
            raise ConfigError(
                "--collection needs --store",
                "It names a Milvus collection: add --store milvus:FILE.db or --store milvus://HOST:PORT",
            )
        return None
    address = parse_store(store)
    check_collection(collection)
    return address


def check_collection(name: str | None) -> str:
    """Milvus' rule: letters, digits and _, not starting with a digit, at most 255 characters."""
    if not name:
        raise ConfigError("--collection is required with --store", "Pass --collection NAME, e.g. photos")
    if len(name) > COLLECTION_MAX or not _COLLECTION.match(name):
        raise ConfigError(
            f"Invalid --collection {name!r}",
            "Milvus collection names use letters, digits and _, do not start with a digit, "
            f"and have at most {COLLECTION_MAX} characters",
        )
    return name
