"""The accuracy check after quantizing: its verdicts, its metrics per kind of data."""

from __future__ import annotations

import numpy as np
import pytest

from invspread_edge_export import accuracy_check as ac
from invspread_edge_runtime.errors import AccuracyError
from invspread_edge_runtime.metadata import read_model_meta


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(n, rng, noise):
    labels = np.arange(n) % 4
    centres = np.eye(8)[:4]
    return _unit(centres[labels] + noise * rng.standard_normal((n, 8))), labels


def _held(rng):
    q, ql = _clusters(40, rng, 0.3)
    m, ml = _clusters(80, rng, 0.3)
    held = ac.HeldOut(
        "toy", "knn", np.zeros((40, 3, 2, 2), np.uint8), ql, np.zeros((80, 3, 2, 2), np.uint8), ml
    )
    return held, ac.Embeddings(q, m)


def test_identical_embeddings_pass():
    held, ref = _held(np.random.default_rng(0))
    result = ac.compare(held, ref, ref, "int8")
    assert result.status == "ok" and result.drop_points == 0
    assert result.mean_cosine == pytest.approx(1.0) and result.top1_agreement == 1.0
    ac.require_accuracy(result)


def test_a_large_drop_fails_or_warns_when_allowed():
    rng = np.random.default_rng(0)
    held, ref = _held(rng)
    broken = ac.Embeddings(_unit(rng.standard_normal(ref.queries.shape)), ref.memory)  # queries scrambled
    failed = ac.compare(held, ref, broken, "int8", min_mean_cosine=-1.0)
    assert failed.status == "fail" and failed.drop_points > 20
    with pytest.raises(AccuracyError, match="--allow-accuracy-drop"):
        ac.require_accuracy(failed)
    warned = ac.compare(held, ref, broken, "int8", allowed=100.0, min_mean_cosine=-1.0)
    assert warned.status == "warn"
    ac.require_accuracy(warned)
    assert ac.compare(held, ref, broken, "int8", allowed=1.0, min_mean_cosine=-1.0).status == "fail"


def test_embeddings_that_drift_fail_even_when_knn_holds():
    rng = np.random.default_rng(0)
    held, ref = _held(rng)
    rotation = np.linalg.qr(rng.standard_normal((8, 8)))[0].astype(np.float32)  # same neighbours, other space
    rotated = ac.Embeddings(ref.queries @ rotation, ref.memory @ rotation)
    result = ac.compare(held, ref, rotated, "int8", allowed=100.0)
    assert result.drop_points == pytest.approx(0.0) and result.status == "fail"
    with pytest.raises(AccuracyError, match="drift from FP32"):
        ac.require_accuracy(result)


def test_labelled_folder_scores_recall_at_1(image_folder, tiny_export):
    meta = read_model_meta(tiny_export / "model.onnx")
    held = ac.held_out_set(str(image_folder), meta, queries=40)
    assert held.metric == "recall@1" and held.memory is None and len(held.queries) == 40
    emb = ac.embed_held_out(tiny_export / "model.onnx", held, meta)
    result = ac.compare(held, emb, emb, "fp16")
    assert result.metric == "recall@1" and result.fp32 is not None and result.drop_points == 0


def test_unlabelled_folder_gives_agreement_only(tmp_path, image_folder, tiny_export):
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(image_folder.rglob("*.png"))[:12]:
        (flat / path.name).write_bytes(path.read_bytes())
    meta = read_model_meta(tiny_export / "model.onnx")
    held = ac.held_out_set(str(flat), meta)
    assert held.metric == "none"
    emb = ac.embed_held_out(tiny_export / "model.onnx", held, meta)
    result = ac.compare(held, emb, emb, "int8")
    assert result.fp32 is None and result.drop_points is None and result.status == "ok"


def test_fashion_mnist_held_out_is_test_queries_and_train_memory(tiny_export):
    meta = read_model_meta(tiny_export / "model.onnx")
    held = ac.held_out_set("fashion-mnist", meta, queries=30, memory=50)
    assert (
        held.metric == "knn"
        and held.queries.shape == (30, 3, 28, 28)
        and held.memory.shape == (50, 3, 28, 28)
    )
    assert held.queries.dtype == np.uint8


def test_held_out_images_follow_the_evaluation_protocol(fmnist_test, tiny_export):
    from invspread_edge_runtime.evaluation.protocol import eval_data

    meta = read_model_meta(tiny_export / "model.onnx")
    held = ac.held_out_set("fashion-mnist", meta, queries=30, memory=50)
    sets = eval_data("fashion-mnist", "knn", queries=30, memory=50)
    assert np.array_equal(held.queries, sets.queries.images) and np.array_equal(
        held.memory, sets.memory.images
    )
    assert np.array_equal(held.query_labels, sets.queries.labels)


def test_models_run_on_the_runtimes_own_backend(monkeypatch, tiny_export):
    opened = []
    real = ac.open_backend

    def spy(path, **kwargs):
        opened.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(ac, "open_backend", spy)
    meta = read_model_meta(tiny_export / "model.onnx")
    held = ac.held_out_set("fashion-mnist", meta, queries=20, memory=40)
    emb = ac.embed_held_out(tiny_export / "model.int8-cpu.onnx", held, meta)
    assert opened == [{"backend": "ort-cpu"}] and emb.queries.shape[0] == 20 and emb.memory.shape[0] == 40
