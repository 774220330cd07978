"""`invedge export RUN --triton DIR`: the export, then a Triton repository of it; a bad target is
refused in one line before any export work."""

from __future__ import annotations

from tiny import invedge


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
