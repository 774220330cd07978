"""benchmarks/fmnist_screen.py and benchmarks/fmnist_recipe.sh at toy size: the scripts behind the
README's training figures still run, and their tables and files say what was run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import REPO


def _screen_module():
    spec = importlib.util.spec_from_file_location("fmnist_screen", REPO / "benchmarks" / "fmnist_screen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_screen_variants_are_typed_train_configs():
    screen = _screen_module()
    from invspread_edge import TrainConfig

    cfg = screen.variant(TrainConfig(), "temperature=0.2 detach_keys=false aug=size=20 limit=none epochs=3")
    assert cfg.temperature == 0.2 and cfg.detach_keys is False and cfg.aug == "size=20"
    assert cfg.limit is None and cfg.epochs == 3
    with pytest.raises(KeyError):
        screen.variant(TrainConfig(), "temprature=0.2")


def test_screen_runs_each_variant_and_writes_its_table(tmp_path, capsys):
    screen = _screen_module()
    out = tmp_path / "screen"
    screen.main(["--out", str(out), "--width", "8", "--epochs", "1", "--limit", "256",
                 "--eval-memory", "200", "--eval-queries", "100", "", "aug=size=16 detach_keys=false"])  # fmt: skip
    rows = json.loads((out / "screen.json").read_text())
    assert [r["variant"] for r in rows] == ["base", "aug=size=16 detach_keys=false"]
    assert all(0 <= r["knn"] <= 1 and r["seconds"] > 0 for r in rows)
    stored = json.loads((out / "2" / "run.json").read_text())["config"]
    assert stored["augment"]["view_size"] == 16 and stored["image_size"] == 28
    assert "vs first" in capsys.readouterr().out


def test_recipe_script_check_run(tmp_path):
    """The script's own quick check (its header's third line), with its summary and pictures
    (COMPARE against itself: the clock picture's code path)."""
    run = tmp_path / "r"
    env = {**os.environ, "RUN": str(run), "WIDTH": "8", "EPOCHS": "1", "EVAL_EVERY": "1", "LIMIT": "512",
           "EVAL_LIMIT": "400", "EVAL_MEMORY": "300", "EVAL_QUERIES": "100", "COMPARE": str(run), "AUG": "size=20",
           "BIN": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "fmnist_recipe.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "final kNN (fp32" in proc.stdout and "baseline untrained" in proc.stdout
    assert (run / "curves_baselines.png").stat().st_size > 0
    assert (run / "recipe_vs_compare.png").stat().st_size > 0 and "r: final kNN" in proc.stdout
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["augment"]["view_size"] == 20
    for name in ("eval_knn", "baseline_pixels", "baseline_pixels-normalized", "baseline_untrained"):
        assert 0 <= json.loads((run / f"{name}.json").read_text())["knn_accuracy"] <= 1
