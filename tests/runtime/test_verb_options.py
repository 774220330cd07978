"""The options of embed, search and index refuse a bad value when made, with the line the CLI prints;
their results' `to_dict()` is the `--json` the verbs print. Runtime-only: no model is opened here."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from invspread_edge_runtime.backends.base import BackendInfo
from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.embeddings.corpus import EmbedOptions, EmbedResult
from invspread_edge_runtime.errors import ConfigError, InvedgeError
from invspread_edge_runtime.gallery import Where
from invspread_edge_runtime.index.manage import (
    IndexAddOptions,
    IndexBuildOptions,
    IndexBuildResult,
    IndexChange,
    IndexInfo,
    IndexInfoOptions,
    IndexRemoveOptions,
)
from invspread_edge_runtime.index.result import SearchResult
from invspread_edge_runtime.search.images import ImageSearch, SearchOptions

M, E = Path("m.onnx"), Path("photos.emb")
EMBED = ["embed", "m.onnx", "photos", "--out", "photos.emb"]
BUILD = ["index", "build", "photos.emb"]
STORE = ["--store", "milvus:g.db", "--collection", "photos"]

# (what the library is given, the same as flags, the start of the line both say)
CASES = [
    (
        lambda: EmbedOptions(M, ["photos"], E, dtype="int8"),
        [*EMBED, "--dtype", "int8"],
        "Invalid --dtype 'int8'",
    ),
    (lambda: EmbedOptions(M, ["photos"], E, batch=0), [*EMBED, "--batch", "0"], "--batch 0 is out of range"),
    (lambda: EmbedOptions(M, ["photos"], E, threads=-1), [*EMBED, "--threads", "-1"], "--threads -1 is out"),
    (
        lambda: EmbedOptions(M, ["photos"], E, overwrite=True, retry_failed=True),
        [*EMBED, "--overwrite", "--retry-failed"],
        "--overwrite and --retry-failed contradict",
    ),
    (lambda: EmbedOptions(M, ["p"], E, ray_actors=2), [*EMBED, "--ray-actors", "2"], "--ray-actors and"),
    (lambda: EmbedOptions(M, ["p"], E, ray=" "), [*EMBED, "--ray", " "], "Invalid --ray ''"),
    (
        lambda: EmbedOptions(M, ["p"], E, ray="auto", ray_gpus_per_actor=17.0),
        [*EMBED, "--ray", "auto", "--ray-gpus-per-actor", "17"],
        "--ray-gpus-per-actor 17 is out of range",
    ),
    (
        lambda: EmbedOptions(M, ["p"], E, ray="auto", backend="nope"),
        [*EMBED, "--ray", "auto", "--backend", "nope"],
        "Invalid backend 'nope'",
    ),
    (
        lambda: SearchOptions(["q.jpg"], index=Path("i"), k=0),
        ["search", "i", "q.jpg", "--k", "0"],
        "--k 0 is out",
    ),
    (
        lambda: SearchOptions(["q.jpg"], index=Path("i"), ef_search=0),
        ["search", "i", "q.jpg", "--ef-search", "0"],
        "--ef-search 0 is out of range",
    ),
    (
        lambda: SearchOptions(["q.jpg"], index=Path("i"), collection="c"),
        ["search", "i", "q.jpg", "--collection", "c"],
        "--collection needs --store",
    ),
    (
        lambda: SearchOptions(["q.jpg"], store="milvus:g.db"),
        ["search", "--store", "milvus:g.db", "q.jpg"],
        "--coll",
    ),
    (
        lambda: IndexBuildOptions(E, out=Path("o"), kind="x"),
        [*BUILD, "--out", "o", "--kind", "x"],
        "Invalid --kind",
    ),
    (
        lambda: IndexBuildOptions(E, out=Path("o"), m=1),
        [*BUILD, "--out", "o", "--m", "1"],
        "--m 1 is out of range",
    ),
    (lambda: IndexBuildOptions(E), BUILD, "index build writes an index file or a Milvus collection"),
    (
        lambda: IndexBuildOptions(E, out=Path("o"), store="milvus:g.db", collection="c"),
        [*BUILD, "--out", "o", *STORE],
        "index build writes",
    ),
    (lambda: IndexAddOptions([], index=Path("i")), ["index", "add", "i"], "index add needs the index file"),
    (lambda: IndexRemoveOptions([]), ["index", "remove"], "index remove needs the index file"),
    (lambda: IndexInfoOptions(), ["index", "info"], "index info needs the index file"),
    (
        lambda: IndexInfoOptions(Path("i"), store="milvus:g.db", collection="photos"),
        ["index", "info", "i", *STORE],
        "with --store, index info takes no INDEX file (got i)",
    ),
]


@pytest.mark.parametrize(
    ("make", "argv", "start"), CASES, ids=[" ".join(c[1][:1] + c[1][-2:]) for c in CASES]
)
def test_options_refuse_with_the_clis_line(make, argv, start, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is read or written: the refusal comes first
    with pytest.raises(InvedgeError) as refused:
        make()
    assert isinstance(refused.value, ConfigError)
    assert str(refused.value).startswith(start)
    capsys.readouterr()
    assert run(create_app(), argv) == 1
    assert capsys.readouterr().err == f"error: {refused.value}\n"
    assert not any(tmp_path.iterdir())


def test_options_keep_what_they_were_given_as_paths_and_tuples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    embed = EmbedOptions("m.onnx", ["a", Path("b")], "out.emb", batch=8)
    assert embed.model == M and embed.images == (Path("a"), Path("b")) and embed.out == Path("out.emb")
    assert EmbedOptions(M, [], ".").out == tmp_path.resolve()  # the writer cannot swap "." itself
    search = SearchOptions(["q.jpg"], store="milvus:g.db", collection="photos")
    assert search.queries == (Path("q.jpg"),) and search.address.shown == "milvus:g.db"
    assert IndexRemoveOptions(["a"], index=Path("i")).ids == ("a",)


def test_embed_result_to_dict_is_the_manifest_with_the_run(tmp_path):
    manifest = {"format": "f", "count": 2, "failed": [], "seconds": 0.5, "resumed": 0}
    images = SimpleNamespace(duplicates=[Path("a.jpg")])
    result = EmbedResult(
        tmp_path / "p.emb", manifest, BackendInfo("ort-cpu", "cpu", "fp32", "m.onnx"), images, 1.23456
    )
    got = result.to_dict()
    assert list(got) == [*manifest, "path", "total_seconds", "duplicates_skipped"]
    assert (
        got["path"] == str(tmp_path / "p.emb")
        and got["total_seconds"] == 1.235
        and got["duplicates_skipped"] == 1
    )
    assert json.loads(json.dumps(got)) == got


def _search(index: object, index_path: Path | None) -> ImageSearch:
    result = SearchResult(
        np.array([[0.9, 0.5]], np.float32), np.array([[1, 0]]), ["a", "b"], ["", ""], "numpy", ["note"]
    )
    backend = BackendInfo("ort-cpu", "cpu", "fp32", "m.onnx")
    return ImageSearch(
        result,
        index,
        [Path("q.jpg")],
        backend,
        [(Path("bad.jpg"), "unreadable")],
        k=2,
        count=2,
        index_path=index_path,
    )


def test_search_to_dict_names_the_gallery_and_every_query():
    index_file = SimpleNamespace(where=lambda: Where("photos.index", "photos.index"))
    got = _search(index_file, Path("photos.index")).to_dict()
    assert got == {
        "index": "photos.index",
        "k": 2,
        "searcher": "numpy",
        "backend": "ort-cpu",
        "results": [
            {
                "query": "q.jpg",
                "found": 2,
                "neighbours": [{"rank": 1, "id": "b", "score": 0.9}, {"rank": 2, "id": "a", "score": 0.5}],
            }
        ],
        "skipped": [{"query": "bad.jpg", "reason": "unreadable"}],
        "warnings": ["note"],
    }
    assert json.loads(json.dumps(got)) == got
    where = {"store": "milvus:g.db", "collection": "photos"}
    milvus = SimpleNamespace(where=lambda: Where("photos in milvus:g.db", "--store milvus:g.db ...", where))
    assert list(_search(milvus, None).to_dict())[:4] == ["index", "store", "collection", "k"]


def test_index_results_to_dict_add_what_each_verb_did():
    facts = {"format": "f", "kind": "flat", "count": 3, "params": {}, "recall_at_10": None}
    built = IndexBuildResult(facts, 1.23456, Path("p.index"), 100)
    assert built.to_dict() == facts | {"path": "p.index", "size_bytes": 100, "seconds": 1.235}
    assert list(IndexBuildResult(facts, 2.0).to_dict()) == [*facts, "seconds"]  # Milvus: no file
    assert list(IndexChange(facts, "added", 2, Path("p.index"), 100).to_dict()) == [*facts, "path", "added"]
    assert IndexChange(facts, "removed", 1).to_dict() == facts | {"removed": 1}
    assert IndexInfo(facts | {"ids": ["a"]}).to_dict() == facts | {"ids": ["a"]}
    for result in (built, IndexChange(facts, "added", 2), IndexInfo(facts)):
        assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
