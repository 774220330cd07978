"""`--store` parsing and collection names: no Milvus needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from invspread_edge_runtime.errors import ConfigError
from invspread_edge_runtime.milvus_store.address import check_collection, parse_store


def test_store_forms():
    lite = parse_store("milvus:./photos.milvus.db")
    assert lite.local and lite.path == Path("photos.milvus.db").absolute() and lite.uri == str(lite.path)
    assert lite.shown == "milvus:./photos.milvus.db"
    remote = parse_store("milvus://milvus.internal:19530")
    assert (remote.uri, remote.shown, remote.local, remote.path) == (
        "http://milvus.internal:19530",
        "milvus://milvus.internal:19530",
        False,
        None,
    )
    assert parse_store("milvus://db").uri == "http://db:19530"
    assert parse_store("milvus+https://zilliz.example:443").uri == "https://zilliz.example:443"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("photos.db", "Invalid --store"),
        ("milvus:", "no file given"),
        ("milvus:./photos", "must end in .db"),
        ("milvus://host:99999", "not HOST:PORT"),
        ("milvus://user:secret@host:19530", "MILVUS_TOKEN"),
        ("http://host:19530", "Invalid --store"),
    ],
)
def test_bad_stores_are_config_errors(text, fragment):
    with pytest.raises(ConfigError) as caught:
        parse_store(text)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("name", ["photos", "_x", "a1_b2"])
def test_good_collection_names(name):
    assert check_collection(name) == name


@pytest.mark.parametrize("name", ["1photos", "my-photos", "a b", "", None, "x" * 256])
def test_bad_collection_names(name):
    with pytest.raises(ConfigError):
        check_collection(name)
