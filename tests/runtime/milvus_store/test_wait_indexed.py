"""Waiting for a Milvus server's index build (`_wait_indexed`): what `describe_index` answers while rows
wait, when the build failed, when it reports nothing, and when the wait runs out."""

from __future__ import annotations

import pytest

from invspread_edge_runtime.milvus_store import gallery


class Described:
    """A client whose `describe_index` answers `answers` in turn (the last one from then on)."""

    def __init__(self, *answers: dict | None) -> None:
        self.answers = list(answers)
        self.asked = 0

    def describe_index(self, collection: str, field: str, timeout: float) -> dict | None:
        assert (collection, field) == ("photos", "vector")
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(gallery, "INDEX_POLL_S", 0.01)


def test_it_polls_until_no_rows_are_pending():
    client = Described(
        {"state": "InProgress", "pending_index_rows": 5},
        {"state": "InProgress", "pending_index_rows": 5},
        {"state": "Finished", "pending_index_rows": 0},
    )
    gallery._wait_indexed(client, "photos", timeout=5)
    assert client.asked == 3


@pytest.mark.parametrize("answer", [None, {}, {"state": "Finished", "pending_index_rows": 0}])
def test_nothing_pending_returns_at_once(answer):
    client = Described(answer)
    gallery._wait_indexed(client, "photos", timeout=5)
    assert client.asked == 1


def test_a_failed_build_is_an_error():
    client = Described(
        {"state": "InProgress", "pending_index_rows": 5}, {"state": "Failed", "pending_index_rows": 5}
    )
    with pytest.raises(RuntimeError, match="index build failed"):
        gallery._wait_indexed(client, "photos", timeout=5)
    assert client.asked == 2


def test_rows_still_pending_at_the_deadline_time_out():
    client = Described({"state": "InProgress", "pending_index_rows": 7})
    with pytest.raises(TimeoutError, match=r"^7 rows were still waiting for their index after 0.05 s$"):
        gallery._wait_indexed(client, "photos", timeout=0.05)
    assert client.asked >= 2
