"""The one evaluation protocol: its metrics against the numpy kernels, its k clamp, its refusals,
and which images are memory and queries."""

from __future__ import annotations

import numpy as np
import pytest

from invspread_edge_runtime.errors import DataError, InvedgeError
from invspread_edge_runtime.evaluation import accuracy
from invspread_edge_runtime.evaluation import protocol as evaluation
from invspread_edge_runtime.evaluation.datasets import select


def test_protocols_match_the_runtime_metrics():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    labels = np.repeat(np.arange(3), 40)
    x = centers[labels] + 0.3 * rng.normal(size=(120, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    items = evaluation.Embedded(x, labels, 0)
    memory, queries = (
        evaluation.Embedded(x[::2], labels[::2], 0),
        evaluation.Embedded(x[1::2], labels[1::2], 0),
    )
    assert evaluation.knn_split(memory, queries, k=10) == accuracy.knn_accuracy(
        x[::2], labels[::2], x[1::2], labels[1::2], k=10, temperature=evaluation.KNN_T
    )
    loo = evaluation.knn_leave_one_out(items, k=10)
    assert loo > 0.9
    r = evaluation.retrieval(items)
    assert set(r) == {"recall@1", "recall@2", "recall@4", "recall@8", "nmi"}
    assert r["recall@1"] <= r["recall@2"] <= r["recall@4"] <= r["recall@8"] and 0 < r["nmi"] <= 1


def test_metrics_need_labels():
    items = evaluation.Embedded(np.eye(3, dtype=np.float32), None, 0)
    with pytest.raises(DataError, match="sub-folder per class"):
        evaluation.retrieval(items)
    with pytest.raises(DataError, match="needs labels"):
        evaluation.knn_leave_one_out(items)


def _clusters(per_class, classes=4, dim=16, noise=0.2, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    x = centers[labels] + noise * rng.normal(size=(len(labels), dim))
    return evaluation.Embedded((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels, 0)


def _near_collapsed(per_class=10, classes=4):
    """An early embedding: every cosine above 0.99, yet each image's nearest are its own class."""
    rng = np.random.default_rng(0)
    base, centers = rng.normal(size=16), rng.normal(size=(classes, 16))
    labels = np.repeat(np.arange(classes), per_class)
    x = 10 * base + 0.3 * centers[labels] + 0.02 * rng.normal(size=(len(labels), 16))
    return evaluation.Embedded((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels, 0)


def test_knn_on_a_set_smaller_than_k_clamps_k_and_warns(capsys):
    """40 images of 4 classes: leave-one-out with an unclamped k = 200 votes over all 39 others, where
    the query's own class is one image short: 0 % for an embedding whose neighbours are all right."""
    items = _near_collapsed()
    raw = accuracy.knn_predict(items.vectors, items.labels, items.vectors, 200, 0.1, exclude_self=True)
    assert (raw == items.labels).mean() == 0.0  # the trap: a global vote against one's own class
    assert evaluation.knn_k(items.labels, 200, exclude_self=True) == 9
    assert evaluation.knn_leave_one_out(items) == 1.0
    err = capsys.readouterr().err
    assert "k = 200 is more than the 10 images per class" in err and "using k = 9" in err
    assert evaluation.knn_leave_one_out(items, warn=False) == 1.0 and capsys.readouterr().err == ""
    memory, queries = _clusters(10, seed=1), _clusters(5, seed=1)
    assert evaluation.knn_split(memory, queries) == 1.0 and "using k = 10" in capsys.readouterr().err
    big = _clusters(60)
    assert evaluation.knn_k(big.labels, 50) == 50  # enough images: k as asked, no warning


def test_metrics_refuse_sets_where_they_mean_nothing():
    one_class = evaluation.Embedded(_clusters(10).vectors[:10], np.zeros(10, dtype=np.int64), 0)
    with pytest.raises(DataError, match="at least two classes"):
        evaluation.knn_leave_one_out(one_class)
    with pytest.raises(DataError, match="at least two classes"):
        evaluation.retrieval(one_class)
    few = _clusters(2)  # 8 images: every other image is among the 8 nearest
    with pytest.raises(DataError, match="more than 8 images"):
        evaluation.retrieval(few)
    with pytest.raises(InvedgeError, match="k >= 1"):
        evaluation.knn_leave_one_out(_clusters(10), k=0)


def test_split_data_give_train_memory_and_test_queries_sized_apart(fmnist_test):
    data = evaluation.eval_data("fashion-mnist", "knn", [0, 1], memory=50, queries=30)
    assert len(data.memory) == 50 and len(data.queries) == 30
    assert set(np.unique(data.memory.labels)) == {0, 1} and set(np.unique(data.queries.labels)) == {0, 1}
    assert np.array_equal(data.queries.images, select(fmnist_test, [0, 1], 30).images)  # one selection rule
    both = evaluation.eval_data("fashion-mnist", "knn", limit=40)
    assert len(both.memory) == 40 and len(both.queries) == 40
    assert evaluation.eval_data("fashion-mnist", "retrieval", limit=40).memory is None


def test_a_folder_is_one_set_of_queries(image_folder):
    data = evaluation.eval_data(str(image_folder), "knn", memory=5, queries=12)
    assert data.memory is None and len(data.queries) == 12


def test_eval_data_rejects_an_unknown_protocol():
    with pytest.raises(InvedgeError, match="Only knn, retrieval"):
        evaluation.eval_data("fashion-mnist", "recall")


def test_evaluate_embeddings_reports_the_k_it_used(image_folder):
    data = evaluation.eval_data(str(image_folder), "knn")
    items = _clusters(len(data.queries) // 4)
    result = evaluation.evaluate_embeddings(lambda images: items, data, "knn", k=200)
    assert result["mode"] == "leave-one-out" and result["k_requested"] == 200
    assert result["k"] == evaluation.knn_k(items.labels, exclude_self=True) and result["knn_accuracy"] == 1.0
