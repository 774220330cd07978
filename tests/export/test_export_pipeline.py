"""The export pipeline's failure paths: a failed check keeps no file; flags reach the library."""

from __future__ import annotations

import numpy as np
import pytest

from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge_export import pipeline
from invspread_edge_export.meta import meta_from_config
from invspread_edge_export.pipeline import ExportOptions, export_model
from invspread_edge_runtime.errors import AccuracyError, ModelError


@pytest.fixture(scope="module")
def tiny(tiny_run):
    ckpt = load_checkpoint(tiny_run)
    return build_model(ckpt), meta_from_config(ckpt.config, ckpt.sha256)


def test_failed_parity_keeps_no_model(tiny, tmp_path, monkeypatch):
    real = pipeline.torch_embeddings
    monkeypatch.setattr(pipeline, "torch_embeddings", lambda m, x: np.roll(real(m, x), 1, axis=1))
    with pytest.raises(ModelError, match="does not match PyTorch"):
        export_model(*tiny, ExportOptions(out_dir=tmp_path), data="fashion-mnist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failed_accuracy_keeps_no_int8_file(tiny, tmp_path):
    options = ExportOptions(
        out_dir=tmp_path,
        int8=True,
        calib_count=32,
        accuracy_queries=30,
        accuracy_memory=60,
        accuracy_bound=-100.0,
    )
    with pytest.raises(AccuracyError, match="int8 loses"):
        export_model(*tiny, options, data="fashion-mnist")
    # all or nothing: the FP32 model passed its own check, but a failed export moves nothing into
    # the folder (only the calibration ranges cache stays, so the rerun skips calibrating)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache"]


def test_percentile_calibration_and_folder_calibration(tiny, tmp_path, image_folder):
    options = ExportOptions(
        out_dir=tmp_path,
        int8=True,
        calib=image_folder,
        calib_count=32,
        calib_method="percentile",
        accuracy_queries=30,
        accuracy_memory=60,
        allow_accuracy_drop=100.0,
    )
    report = export_model(*tiny, options, data="fashion-mnist")
    assert report.calibration["method"] == "percentile" and report.calibration["count"] == 32
    assert report.calibration["name"] == f"folder:{image_folder}"
    assert (tmp_path / "model.int8.onnx").is_file() and (tmp_path / "model.int8-cpu.onnx").is_file()
