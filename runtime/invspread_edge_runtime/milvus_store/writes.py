"""Writing items into a collection: upserts in batches, with progress, retries and a resumable failure.

An upsert replaces a row of the same id, so writing the same embeddings twice leaves one row each:
a rerun after a failure, or a rebuild, is idempotent. A batch that fails for its connection is
retried a few times with a short backoff (pymilvus also retries within each call's timeout); when
it still fails, the error says how many items were written before the connection dropped, and that
rerunning the same command finishes the job. After each batch: the test hook `milvus-batch`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from .. import hooks
from ..errors import InvedgeError
from .address import StoreAddress
from .connect import call_timeout, failed, is_connection, is_input_error

BATCH = 2000  # rows per upsert: well under gRPC's message limit for 2048-d vectors (INVEDGE_MILVUS_BATCH)
RETRIES = 3  # attempts per batch after the first
BACKOFF_S = 0.5  # doubled after each failed attempt
T = TypeVar("T")


def batch_size() -> int:
    """Rows per upsert: BATCH, or INVEDGE_MILVUS_BATCH (a test makes a small gallery take several)."""
    try:
        return max(1, int(os.environ.get("INVEDGE_MILVUS_BATCH", BATCH)))
    except ValueError:
        return BATCH


def batches(count: int, size: int | None = None) -> Iterator[slice]:
    size = size or batch_size()
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


def retried(
    store: StoreAddress, what: str, call: Callable[[], T], dropped: Callable[[Exception], InvedgeError]
) -> T:
    """`call()`, again after a connection failure (RETRIES times, backoff doubling); else `dropped(exc)`."""
    delay = BACKOFF_S
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except Exception as exc:
            if is_input_error(exc) or not is_connection(exc):
                raise failed(store, what, exc) from exc
            if attempt == RETRIES:
                raise dropped(exc) from exc
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def upsert(
    client: Any,
    store: StoreAddress,
    collection: str,
    vectors: np.ndarray,
    ids: list[str],
    locations: list[str],
    *,
    count_new: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Upsert every row in batches; returns how many ids were new (0 unless `count_new`)."""
    total, written, new = len(ids), 0, 0
    timeout = call_timeout()

    def dropped(exc: Exception) -> InvedgeError:
        return InvedgeError(
            f"the connection to Milvus at {store.shown} dropped after {written:,} of {total:,} items "
            f"were written to {collection}",
            "Check the server, then rerun the same command: re-adding is idempotent",
        )

    for part in batches(total):
        batch_ids = ids[part]
        if count_new:
            held = retried(
                store, "look up ids", lambda b=batch_ids: held_ids(client, collection, b, timeout), dropped
            )
            new += len(set(batch_ids) - held)
        rows = [
            {"id": item, "vector": vector, "location": location}
            for item, vector, location in zip(batch_ids, vectors[part], locations[part], strict=True)
        ]
        retried(store, "write items", lambda r=rows: client.upsert(collection, r, timeout=timeout), dropped)
        written += len(rows)
        if on_progress is not None:
            on_progress(written, total)
        hooks.reached("milvus-batch")
    return new


def held_ids(client: Any, collection: str, ids: list[str], timeout: float) -> set[str]:
    """Which of `ids` the collection holds (one primary-key lookup)."""
    if not ids:
        return set()
    rows = client.get(collection, ids=list(ids), output_fields=["id"], timeout=timeout)
    return {row["id"] for row in rows}
