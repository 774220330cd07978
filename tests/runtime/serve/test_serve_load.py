"""`invedge serve` under a bounded load on loopback: 32 clients mix searches and gallery adds for a fixed time.

The server gets a queue of one image and batches of one, so that it is overloaded on purpose: what
it may answer is 200 (search), 201 (add) or 503 with Retry-After (the queue was full), never
another status, never a dropped connection; and every add that got 201 is in the gallery at the
end, both as the service counts it (/v1/info) and in the index file it wrote (`Index.load`), with
no other item gained or lost. Nothing here depends on how fast the machine is: the figures are
counts, whatever they come to in the time given.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field

from serve_client import Reply, call, get, image_files, multipart

from invspread_edge_runtime import Index

CLIENTS = 32
DURATION_S = 6.0  # each client sends requests until then (the last one may end a little later)
ADD_EVERY = 3  # a client's every third request adds an image; the others search
CLIENT_TIMEOUT_S = 120.0  # far beyond any wait here: a timeout is a failure, not load shedding
SEARCH, ADD = "search", "add"
ALLOWED = {SEARCH: {200, 503}, ADD: {201, 503}}


@dataclass
class Outcome:
    """One request: what it was (an add has the id it asked for) and what came back."""

    kind: str
    reply: Reply
    item_id: str | None = None

    @property
    def status(self) -> int:
        return self.reply.status


@dataclass
class Tally:
    """What one client saw."""

    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # connection errors and timeouts


def client(
    url: str, headers: dict[str, str], n: int, images: list[tuple[str, bytes]], start: float, tally: Tally
) -> None:
    """Requests one after another until the deadline: searches, and every ADD_EVERY-th an add."""
    while time.monotonic() < start:
        time.sleep(0.001)
    sent = 0
    while time.monotonic() < start + DURATION_S:
        name, data = images[(n + sent) % len(images)]
        item_id = f"load-{n:02d}-{sent:05d}" if sent % ADD_EVERY == ADD_EVERY - 1 else None
        fields = {} if item_id is None else {"id": item_id}
        body, content_type = multipart([(name, data)], fields)
        path = "/v1/search?k=3" if item_id is None else "/v1/gallery"
        sent += 1
        try:
            reply = call(url, "POST", path, body, {"Content-Type": content_type, **headers}, CLIENT_TIMEOUT_S)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, half an answer
            tally.errors.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        tally.outcomes.append(Outcome(SEARCH if item_id is None else ADD, reply, item_id))


def body_of(outcome: Outcome) -> dict:
    """The reply's JSON; one that is not JSON (a crash page) becomes text for the failure message."""
    try:
        return outcome.reply.json()
    except ValueError:
        return {"text": outcome.reply.body[:200].decode("utf-8", "replace")}


def test_32_clients_mixing_searches_and_adds_lose_nothing(served, tiny_export, image_folder, writable_index):
    before = Index.load(writable_index).ids
    images = [(p.name, p.read_bytes()) for p in image_files(image_folder, 40)]
    tallies = [Tally() for _ in range(CLIENTS)]
    overload = ("--backend", "ort-cpu", "--queue", "1", "--max-batch", "1")  # one image waits, no more

    with served(tiny_export / "model.onnx", writable_index, *overload) as server:
        start = time.monotonic() + 0.5  # every thread started before the first request
        threads = [
            threading.Thread(target=client, args=(server.url, server.headers, n, images, start, tally))
            for n, tally in enumerate(tallies)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        info = get(server.url, "/v1/info", server.headers)
    # leaving the block sent SIGTERM and saw exit 0: in flight drained, the file written

    errors = [e for t in tallies for e in t.errors]
    outcomes = [o for t in tallies for o in t.outcomes]
    counts: dict[tuple[str, int], int] = {}
    for o in outcomes:
        counts[o.kind, o.status] = counts.get((o.kind, o.status), 0) + 1
    summary = f"{len(outcomes)} answers {counts}; {len(errors)} connection errors {errors[:3]}"
    assert not errors, summary
    assert all(o.status in ALLOWED[o.kind] for o in outcomes), summary  # no 5xx but a deliberate 503
    for o in outcomes:
        if o.status == 503:
            assert o.reply.headers.get("retry-after") == "1", summary
            assert o.reply.error["message"], body_of(o)
    searched = [body_of(o) for o in outcomes if (o.kind, o.status) == (SEARCH, 200)]
    added = [o for o in outcomes if (o.kind, o.status) == (ADD, 201)]
    assert searched and added, summary  # whatever the load, some of each got through
    assert [body_of(o)["id"] for o in added] == [o.item_id for o in added]
    expected = sorted(before + [o.item_id for o in added])

    assert info.status == 200 and info.json()["gallery"]["items"] == len(expected), summary
    assert max(body_of(o)["items"] for o in added) == len(expected)
    assert sorted(Index.load(writable_index).ids) == expected, summary
    # and each search saw a whole gallery, whichever add it came between
    short = [body for body in searched if len(body["results"][0]["neighbours"]) != 3]
    assert not short, f"{len(short)} of {len(searched)} searches found fewer than 3: {json.dumps(short[:1])}"
