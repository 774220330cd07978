"""`invedge export RUN --triton DIR`: the export, then a Triton repository of it; a bad target is
refused in one line before any export work."""

from __future__ import annotations

from tiny import invedge
from triton_testing import require


def test_export_writes_a_triton_repository(tiny_run, tmp_path, capsys):
    out = tmp_path / "runs" / "shop" / "export"
    repo = tmp_path / "repo"
    assert invedge("export", tiny_run, "--out", out, "--triton", repo) == 0
    assert "Triton: wrote invedge_shop, invedge_shop_preprocess, invedge_shop_onnx" in capsys.readouterr().err
    assert sorted(p.name for p in repo.iterdir()) == [
        "README.md", "invedge_shop", "invedge_shop_onnx", "invedge_shop_preprocess",
    ]  # fmt: skip
    assert (repo / "invedge_shop_onnx" / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()


def test_a_bad_triton_target_fails_before_the_export(tiny_run, tmp_path, capsys):
    out = tmp_path / "o"
    repo = tmp_path / "repo"
    (repo / "invedge_o").mkdir(parents=True)
    assert invedge("export", tiny_run, "--out", out, "--triton", repo) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "invedge_o exists" in err, err
    assert "Pass --overwrite, or write it with: invedge deploy triton" in err and "--name NAME" in err
    assert not out.exists() or not any(out.iterdir())
    fresh = tmp_path / "new" / "repo"
    assert (
        invedge("export", tiny_run, "--out", out, "--triton", fresh, "--int8", "--calib", tmp_path / "nope")
        == 1
    )
    assert not fresh.parent.exists()  # a failed export creates no repository
    (tmp_path / "file").write_text("x")
    assert invedge("export", tiny_run, "--out", out, "--triton", tmp_path / "file") == 1
    assert "is not a folder" in capsys.readouterr().err


def test_max_batch_size_follows_the_engines_batch_range(tiny_run, tmp_path, monkeypatch):
    """With --engine the repository's max_batch_size is the engines' maximum batch (the export's
    batch range); TensorRT replaced here (the engines themselves are not what this checks)."""
    from invspread_edge_export import pipeline
    from invspread_edge_export.engines import EngineOptions

    text_format = require("google.protobuf.text_format")
    model_config_pb2 = require("tritonclient.grpc.model_config_pb2")

    monkeypatch.setattr(EngineOptions, "check", lambda self, sources=(): None)
    monkeypatch.setattr(pipeline, "build_engines", lambda report, options, log: [])
    out, repo = tmp_path / "runs" / "b" / "export", tmp_path / "repo"
    assert invedge("export", tiny_run, "--out", out, "--engine", "--max-batch", "16", "--triton", repo) == 0
    for model in ("invedge_b", "invedge_b_onnx", "invedge_b_preprocess"):
        text = (repo / model / "config.pbtxt").read_text()
        assert text_format.Parse(text, model_config_pb2.ModelConfig()).max_batch_size == 16, model
