"""`invedge train --preset/--aug/--no-flip/--init`, the folder size rule, and `invedge augment-preview`."""

from __future__ import annotations

import json

import torch
import torchvision
from safetensors.torch import save_file
from tiny import TINY_TRAIN_OPTIONS as TINY
from tiny import invedge

from invspread_edge import augment_spec
from invspread_edge.checkpoint import load_checkpoint

SMALL = ("--limit", "64", "--epochs", "1", "--eval-every", "0", "-q", *TINY)


def run_json(run):
    return json.loads((run / "run.json").read_text())


def test_run_records_its_whole_augmentation_and_resume_keeps_it(tmp_path, capsys):
    run = tmp_path / "run"
    rc = invedge("train", "--data", "fashion-mnist", "--out", run, "--preset", "grayscale",
                 "--aug", "rotate=10,blur=0.5", "--no-flip", *SMALL)  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "augmentation: grayscale" in err and "rotate=10" in err
    augment = run_json(run)["config"]["augment"]
    want = augment_spec.resolve("grayscale", "rotate=10,blur=0.5,flip=0")
    assert augment["preset"] == "grayscale" and augment["rotate"] == 10 and augment["blur_p"] == 0.5
    assert augment_spec.resolve("natural", augment["spec"]) == want
    train_cfg = load_checkpoint(run).config["train"]
    assert train_cfg["aug"] == augment["spec"]  # the checkpoint's settings carry every value
    rc = invedge("train", "--resume", run, "--epochs", "2")
    assert rc == 0, capsys.readouterr().err
    assert run_json(run)["config"]["augment"] == augment


def test_bad_aug_is_one_line_before_any_work(tmp_path, capsys):
    rc = invedge("train", "--data", "fashion-mnist", "--out", tmp_path / "r", "--aug", "crop=2", *SMALL)
    err = capsys.readouterr().err
    assert rc == 1 and "crop takes LO-HI" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    rc = invedge("train", "--data", "fashion-mnist", "--out", tmp_path / "r", "--preset", "photo", *SMALL)
    assert rc == 1 and "unknown --preset 'photo'" in capsys.readouterr().err


def test_a_folder_of_small_images_trains_at_their_size(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    rc = invedge("train", "--data", image_folder, "--out", run, "--batch-size", "16", "--epochs", "1",
                 "--eval-every", "0", "-q", *TINY[:4], "--precision", "fp32", "--workers", "0")  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "28 px: the folder's images are all 28×28 px" in err
    assert run_json(run)["config"]["image_size"] == 28


def test_init_from_our_run_takes_its_architecture(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert invedge("train", "--data", "fashion-mnist", "--out", first, *SMALL) == 0
    rc = invedge(
        "train",
        "--data",
        "fashion-mnist",
        "--classes",
        "5-9",
        "--out",
        second,
        "--init",
        first,
        "--limit",
        "64",
        "--epochs",
        "1",
        "--eval-every",
        "0",
        "-q",
        "--batch-size",
        "32",
        "--precision",
        "fp32",
        "--workers",
        "0",
    )  # fmt: skip  (no --width: the run's 8)
    err = capsys.readouterr().err
    assert rc == 0, err
    init = run_json(second)["config"]["init"]
    assert init["kind"] == "run" and init["missing"] == [] and init["loaded"] > 0
    assert run_json(second)["config"]["width"] == 8 and "init: loaded" in err
    assert load_checkpoint(second).config["init"]["sha256"] == init["sha256"]


def test_init_from_torchvision_resnet18(tmp_path, capsys):
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}, weights)
    run = tmp_path / "run"
    rc = invedge("train", "--data", "fashion-mnist", "--arch", "resnet18", "--image-size", "32",
                 "--out", run, "--init", weights, "--limit", "16", "--batch-size", "8", "--epochs", "1",
                 "--eval-every", "0", "-q", "--precision", "fp32", "--embedding-dim", "16")  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    init = run_json(run)["config"]["init"]
    assert not [k for k in init["missing"] if k.startswith("backbone.")]  # zero missing backbone keys
    assert sorted(init["missing"]) == ["fc.bias", "fc.weight"] and init["kind"] == "safetensors"
    rc = invedge("train", "--data", "fashion-mnist", "--out", tmp_path / "bad", "--init", weights, *SMALL)
    err = capsys.readouterr().err
    assert rc == 1 and "conv1.weight" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
    rc = invedge(
        "train", "--data", "fashion-mnist", "--out", tmp_path / "x", "--init", tmp_path / "no", *SMALL
    )
    assert rc == 1 and "no such file or folder" in capsys.readouterr().err


def test_augment_preview_draws_rows_of_views(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "aug.png"
    rc = invedge("augment-preview", "--data", "fashion-mnist", "--preset", "documents", "--images", "3",
                 "--views", "4", "--out", out)  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "3 images × 4 views at 28 px" in captured.err and "rotate=5" in captured.err
    with Image.open(out) as img:
        wide, tall = img.size
    assert wide > tall * 1.2  # 3 rows of 5 tiles
    rc = invedge("augment-preview", "--data", "fashion-mnist", "--aug", "nope=1", "--out", out)
    assert rc == 1 and "unknown key 'nope'" in capsys.readouterr().err


def test_augment_preview_of_a_run_uses_its_augmentation(tmp_path, capsys):
    run = tmp_path / "run"
    assert invedge("train", "--data", "fashion-mnist", "--out", run, "--aug", "solarize=0.4", *SMALL) == 0
    capsys.readouterr()
    rc = invedge("augment-preview", "--run", run, "--out", tmp_path / "p.png", "--images", "2")
    assert rc == 0 and "solarize=0.4" in capsys.readouterr().err
    rc = invedge("augment-preview", "--run", run, "--preset", "natural", "--out", tmp_path / "p.png")
    assert rc == 1 and "--run takes the run's own" in capsys.readouterr().err


def test_views_of_the_preview_are_the_training_views():
    """The preview and training share one code path: the same seed gives the same pixels."""
    from invspread_edge.augment import AugmentConfig, TwoViews

    images = torch.randint(
        0, 256, (4, 3, 12, 12), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    cfg = AugmentConfig.from_spec(augment_spec.resolve("documents"), 12, (0.0,) * 3, (1.0,) * 3)
    v1, v2 = TwoViews(cfg)(images, torch.Generator().manual_seed(3))
    p1, p2 = TwoViews(cfg).views01(images, torch.Generator().manual_seed(3))
    assert torch.allclose(v1, p1, atol=1e-6) and torch.allclose(v2, p2, atol=1e-6)  # mean 0, std 1: x


def test_small_views_and_keys_with_gradient_from_the_cli(tmp_path, capsys):
    """The 30-minute recipe's two settings: the run still lives at the image size."""
    run = tmp_path / "run"
    rc = invedge("train", "--data", "fashion-mnist", "--out", run, "--aug", "size=12", "--no-detach-keys",
                 "--limit", "64", "--epochs", "1", "--eval-every", "1", "--eval-memory", "64",
                 "--eval-queries", "32", "-q", *TINY)  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "size=12" in err
    config = run_json(run)["config"]
    assert config["image_size"] == 28 and config["augment"]["view_size"] == 12
    train_cfg = load_checkpoint(run).config["train"]
    assert train_cfg["detach_keys"] is False and "size=12" in train_cfg["aug"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= metrics[-1]["knn_accuracy"] <= 1  # the monitor embeds 28 px images
