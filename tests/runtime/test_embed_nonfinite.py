"""A model that gives NaN or inf never puts one into an embeddings folder, a search or a probe
verdict silently: embedding raises NonFiniteError naming the model, `invedge embed` writes nothing
(and an --overwrite keeps the old folder), `verify` counts the broken probes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from tiny import invedge

from invspread_edge_runtime.embedder import Embedder
from invspread_edge_runtime.errors import NonFiniteError
from invspread_edge_runtime.verify import backend as verify
from invspread_edge_runtime.verify.probes import THRESHOLDS


def broken_onnx(src, dst, value: float = np.nan):
    """`src` (make_tiny_onnx's Flatten → MatMul) with `value` in every weight."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(np.full_like(weights, value), init.name))
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def models(tmp_path_factory, make_tiny_onnx):
    root = tmp_path_factory.mktemp("models")
    good = make_tiny_onnx(root / "good.onnx")
    return good, broken_onnx(good, root / "nan.onnx"), broken_onnx(good, root / "inf.onnx", np.inf)


def files(folder):
    """Every file under `folder` but lock files → its sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.mark.parametrize("which", [1, 2], ids=["nan", "inf"])
def test_the_embedder_refuses_nonfinite_outputs_by_model_name(models, image_folder, which):
    images = sorted((image_folder / "class0").iterdir())[:3]
    with (
        Embedder(models[which], backend="ort-cpu") as embedder,
        pytest.raises(
            NonFiniteError, match=rf"{models[which].name} gives NaN or infinite embeddings for 3 of 3"
        ),
    ):
        embedder.embed(images)
    with Embedder(models[which], backend="ort-cpu", finite_only=False) as embedder:  # what verify measures
        assert not np.isfinite(embedder.embed(images)).any()


def test_embed_writes_nothing_and_an_overwrite_keeps_the_old_folder(models, image_folder, tmp_path, capsys):
    good, nan, _ = models
    new = tmp_path / "new.emb"
    capsys.readouterr()
    assert invedge("embed", nan, image_folder / "class0", "--out", new) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nan.onnx gives NaN or infinite embeddings for 10 of 10 images" in errors[0]
    assert not new.exists() or files(new) == {}

    old = tmp_path / "old.emb"
    assert invedge("embed", good, image_folder / "class0", "--out", old) == 0
    before = files(old)
    assert invedge("embed", nan, image_folder / "class1", "--out", old, "--overwrite") == 1
    assert files(old) == before
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert hidden == []  # no staging folder of the refused --overwrite


def test_verify_counts_the_probes_that_came_back_nonfinite():
    reference = np.eye(4, 8, dtype=np.float32)
    candidate = reference.copy()
    candidate[1:, 0] = np.inf
    result = verify.measure(reference, candidate, THRESHOLDS["fp32"], precision="fp32")
    assert not result.passed and result.failures[0] == "NaN or infinite embeddings for 3 of 4 probes"
