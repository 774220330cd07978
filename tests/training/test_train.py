"""The training loop on tiny real runs: run folder, determinism, exact resume, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from invspread_edge import checkpoint, run_folder
from invspread_edge import training as train_mod
from invspread_edge.checkpoint import build_model, load_checkpoint
from invspread_edge.config import TrainConfig
from invspread_edge.model import create_model
from invspread_edge.training import learning_rate, train
from invspread_edge_runtime.errors import DataError, InvedgeError


def tiny(out, **overrides) -> TrainConfig:
    cfg = dict(
        data="fashion-mnist",
        out=str(out),
        width=8,
        embedding_dim=32,
        limit=256,
        batch_size=32,
        epochs=2,
        precision="fp32",
        workers=0,
        eval_memory=300,
        eval_queries=100,
    )
    cfg.update(overrides)
    return TrainConfig(**cfg)


def flat_weights(state):
    return torch.cat([v.flatten().double() for k, v in sorted(state.items()) if v.is_floating_point()])


@contextlib.contextmanager
def read_only(folder):
    """No file can be created in `folder`, even by root (chattr +i), while the block runs."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr +i: cannot make a folder read-only")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class StopAfter(train_mod.StopFlag):
    """Stands in for a Ctrl-C: the loop sees the stop flag raised after `checks` looks at it."""

    checks = 0

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    @property
    def set(self) -> bool:  # type: ignore[override]
        self.seen += 1
        return self.seen > self.checks

    @set.setter
    def set(self, value: bool) -> None:
        pass


def test_step_schedule_scales_the_recipe():
    assert learning_rate(0.03, 0.0) == 0.03
    assert learning_rate(0.03, 0.59) == 0.03
    assert learning_rate(0.03, 0.6) == pytest.approx(0.003)
    assert learning_rate(0.03, 0.79) == pytest.approx(0.003)
    assert learning_rate(0.03, 0.8) == pytest.approx(0.0015)
    assert learning_rate(0.03, 0.999) == pytest.approx(0.0015)
    assert learning_rate(0.03, 0.5, "cosine") == pytest.approx(0.015)
    with pytest.raises(InvedgeError, match="Only step, cosine, constant"):
        learning_rate(0.03, 0.5, "linear")


def test_run_folder_holds_everything_a_run_needs(tmp_path):
    run = tmp_path / "run"
    result = train(tiny(run), show_progress=False)
    assert result.epochs_done == 2 and result.steps == 16 and not result.interrupted
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["loss"] > 0 and m["images_per_s"] > 0 and 0 <= m["knn_accuracy"] <= 1
    assert metrics[0]["lr"] == pytest.approx(0.03) and metrics[1]["lr"] == pytest.approx(0.0015)

    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epoch"] == 2
    assert info["preprocessing"]["image_size"] == 28
    assert info["preprocessing"]["mean"][0] == pytest.approx(0.286, abs=0.02)  # this subset's statistics
    assert info["data"]["images"] == 256 and len(info["data"]["fingerprint"]) == 64
    assert info["versions"]["torch"] == torch.__version__
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"

    ckpt = load_checkpoint(run)
    assert ckpt.epoch == 2 and ckpt.step == 16
    for key in ("arch", "width", "embedding_dim", "image_size", "mean", "std", "data"):
        assert key in ckpt.config
    assert ckpt.optimizer_state is not None and ckpt.optimizer_state["state"]
    model = build_model(ckpt)
    z = model(torch.zeros(2, 3, 28, 28))
    assert z.shape == (2, 32)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = train(tiny(tmp_path / "a", epochs=1, eval_every=0), show_progress=False)
    b = train(tiny(tmp_path / "b", epochs=1, eval_every=0), show_progress=False)
    c = train(tiny(tmp_path / "c", epochs=1, eval_every=0, seed=1), show_progress=False)
    wa, wb, wc = (flat_weights(load_checkpoint(r.run_dir).model_state) for r in (a, b, c))
    # One process, one CPU: the same seed repeats the run (bit for bit in practice); the bound only
    # leaves room for a kernel that sums in another order (float32, ~1e-6 relative per step). Another
    # seed starts from other weights: they differ by tens of percent.
    assert (wa - wb).norm() < 1e-4 * wa.norm()
    assert (wa - wc).norm() > 0.1 * wa.norm()
    assert a.metrics[0]["loss"] == pytest.approx(b.metrics[0]["loss"], rel=1e-5)
    assert a.metrics[0]["loss"] != pytest.approx(c.metrics[0]["loss"], rel=1e-3)


def test_resume_mid_epoch_repeats_the_uninterrupted_run(tmp_path, monkeypatch):
    full = train(tiny(tmp_path / "full"), show_progress=False)

    monkeypatch.setattr(StopAfter, "checks", 11)  # 8 steps + the epoch-end look, then 2 steps of epoch 2
    monkeypatch.setattr(train_mod, "StopFlag", StopAfter)
    cut = train(tiny(tmp_path / "cut"), show_progress=False)
    assert cut.interrupted and cut.epochs_done == 1
    ckpt = load_checkpoint(tmp_path / "cut")
    assert (ckpt.epoch, ckpt.step) == (1, 10)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "interrupted"

    monkeypatch.setattr(train_mod, "StopFlag", train_mod.StopFlag)
    resumed = train(TrainConfig(out=str(tmp_path / "cut")), resume=True, show_progress=False)
    assert not resumed.interrupted and resumed.epochs_done == 2
    got, want = read_metrics(tmp_path / "cut"), read_metrics(tmp_path / "full")
    # a resume needs no generator state: it repeats the uninterrupted run. The bounds leave room only
    # for float32 sums in another order (1e-6 relative per step): the loss to 1e-5, the weights to
    # 1e-4 of their norm, the kNN accuracy to one of the 100 monitor queries (a near tie may flip)
    assert [m["loss"] for m in got] == pytest.approx([m["loss"] for m in want], rel=1e-5, abs=0)
    assert [m["knn_accuracy"] for m in got] == pytest.approx([m["knn_accuracy"] for m in want], abs=0.011)
    wa = flat_weights(load_checkpoint(tmp_path / "full").model_state)
    wb = flat_weights(load_checkpoint(tmp_path / "cut").model_state)
    assert (wa - wb).norm() < 1e-4 * wa.norm()
    assert full.metrics[-1]["step"] == resumed.metrics[-1]["step"] == 16


def test_resume_finished_run_needs_more_epochs(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, epochs=1, eval_every=0), show_progress=False)
    with pytest.raises(InvedgeError, match="already trained all 1 epochs"):
        train(TrainConfig(out=str(run)), resume=True, show_progress=False)
    longer = train(TrainConfig(out=str(run)), resume=True, epochs=2, show_progress=False)
    assert longer.epochs_done == 2 and [m["epoch"] for m in read_metrics(run)] == [1, 2]


def test_refuses_to_clobber_without_overwrite(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, epochs=1, eval_every=0), show_progress=False)
    with pytest.raises(InvedgeError, match="already holds a run"):
        train(tiny(run, epochs=1, eval_every=0), show_progress=False)
    (run / "keep.txt").write_text("mine")
    train(tiny(run, epochs=1, eval_every=0, seed=3), overwrite=True, show_progress=False)
    assert (run / "keep.txt").read_text() == "mine"
    assert load_checkpoint(run).config["train"]["seed"] == 3


def test_classes_and_limit_choose_the_training_images(tmp_path):
    run = tmp_path / "run"
    result = train(tiny(run, epochs=1, classes="5-9", limit=64, eval_memory=200), show_progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["images"] == 64 and info["data"]["classes"] == "5-9" and info["data"]["limit"] == 64
    assert result.steps == 2 and 0 <= result.metrics[0]["knn_accuracy"] <= 1  # monitor on classes 5-9


def test_folder_with_an_unreadable_file(tmp_path, image_folder):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in image_folder.rglob("*.*"):
        (folder / p.parent.name).mkdir(exist_ok=True)
        (folder / p.parent.name / p.name).write_bytes(p.read_bytes())
    (folder / "class0" / "broken.png").write_bytes(b"not an image")
    run = tmp_path / "run"
    result = train(
        tiny(run, data=str(folder), image_size=16, limit=None, batch_size=41, epochs=1), show_progress=False
    )
    assert result.skipped_images == 1
    m = read_metrics(run)[0]
    assert m["skipped_images"] == 1 and m["images"] == 40
    assert 0 <= m["knn_accuracy"] <= 1  # leave-one-out on the folder's class labels
    assert load_checkpoint(run).config["image_size"] == 16


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (dict(limit=10), DataError, "fewer than one batch"),
        (dict(epochs=0), InvedgeError, "--epochs 0 is out of range. Use 1 to 10000"),
        (dict(schedule="linear"), InvedgeError, "--schedule must be one of"),
        (dict(arch="vgg"), InvedgeError, "Only cifar_resnet18"),
        (dict(temperature=0.0), InvedgeError, "--temperature 0 is out of range"),
        (dict(classes="9-3"), InvedgeError, "low-high"),
        (dict(sync_bn=True, device="cpu"), InvedgeError, "--sync-bn needs CUDA"),
    ],
)
def test_bad_options_say_what_is_allowed(tmp_path, overrides, error, match):
    with pytest.raises(error, match=match):
        train(tiny(tmp_path / "run", **overrides), show_progress=False)


def test_resume_refuses_changed_data(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny(run, epochs=2, eval_every=0), show_progress=False)
    ckpt = load_checkpoint(run)
    cfg = dict(ckpt.config)
    cfg["data_fingerprint"] = "0" * 64
    from invspread_edge.checkpoint import save_checkpoint

    save_checkpoint(run / "checkpoint.safetensors", build_model(ckpt), cfg, 1, 8)
    with pytest.raises(DataError, match="changed since the run started"):
        train(TrainConfig(out=str(run)), resume=True, show_progress=False)


def test_partial_batches_never_reach_the_loss(tmp_path):
    """drop_last: 100 images with batch 32 make 3 full steps per epoch."""
    result = train(tiny(tmp_path / "run", limit=100, epochs=1, eval_every=0), show_progress=False)
    assert result.steps == 3 and result.metrics[0]["images"] == 96
    assert np.isfinite(result.final_loss)


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("clang++")), reason="inductor needs a C++ compiler"
)
def test_compiled_run_trains_the_same_model(tmp_path):
    """--compile trains through torch.compile: the same model, and it learns.

    What --compile promises is checked directly, not a closeness of two trajectories (SGD amplifies
    each kernel's rounding: compiled and eager losses after 16 steps differ by 0.2 % on one CPU and
    0.55 % on another):
    - the compiled module computes the plain model's function: on the same fixed weights, its
      forward (train mode, the one it compiles) matches eager within float32 reassociation (fused
      kernels sum in another order: ~1e-6 relative per layer; 1e-4 on unit vectors is loose);
    - the checkpoint is the plain model's (same keys, no "_orig_mod." prefixes) and loads into it;
    - training moved the weights and lowered the loss (first epoch's mean above the second's).
    """
    torch.manual_seed(0)
    model = create_model("cifar_resnet18", width=8, embedding_dim=32)
    compiled = torch.compile(model)
    x = torch.randn(16, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    model.train()
    with torch.no_grad():
        eager_z = model(x)
        compiled_z = compiled(x)
    assert torch.allclose(compiled_z, eager_z, atol=1e-4)

    run = train(tiny(tmp_path / "compiled", epochs=2, eval_every=0, compile=True), show_progress=False)
    assert json.loads((run.run_dir / "run.json").read_text())["config"]["train"]["compile"] is True
    ckpt = load_checkpoint(run.run_dir)
    plain = create_model("cifar_resnet18", width=8, embedding_dim=32)
    assert ckpt.model_state.keys() == plain.state_dict().keys()
    build_model(ckpt)  # loads strictly into the plain model
    torch.manual_seed(0)
    initial = flat_weights(create_model("cifar_resnet18", width=8, embedding_dim=32).state_dict())
    assert (flat_weights(ckpt.model_state) - initial).norm() > 1e-3 * initial.norm()
    losses = [m["loss"] for m in run.metrics]
    assert all(np.isfinite(losses)) and losses[1] < losses[0]


def test_compile_without_a_compiler_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(train_mod.torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvedgeError, match="--compile needs a C\\+\\+ compiler"):
        train(tiny(tmp_path / "run", compile=True), show_progress=False)


# --- the run folder: --overwrite replaces only once the new run exists; locks; leftovers ---------


def snapshot(folder):
    """Every file under `folder` (hidden ones too) → its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 1-epoch run (with a file of the user's beside it), copied fresh by `old_run`."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(run, epochs=1, eval_every=0), show_progress=False)
    (run / "notes").mkdir()
    (run / "notes" / "mine.txt").write_text("the user's")
    return run


@pytest.fixture
def old_run(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


def leftovers(run):
    return sorted(
        p.name
        for p in run.parent.iterdir()
        if p.name.startswith(f".{run.name}.") and not p.name.endswith(".lock")
    )


@pytest.mark.parametrize(
    "overrides",
    [dict(data="/no/such/folder"), dict(data="UNREADABLE"), dict(limit=10), dict(classes="42")],
    ids=["missing-data", "unreadable-data", "fewer-than-a-batch", "unknown-class"],
)
def test_overwrite_with_bad_input_keeps_the_old_run(old_run, tmp_path, overrides):
    if overrides.get("data") == "UNREADABLE":
        bad = tmp_path / "bad"
        bad.mkdir()
        for i in range(4):
            (bad / f"x{i}.png").write_bytes(b"not an image")
        overrides = dict(overrides, data=str(bad))
    before = snapshot(old_run)
    with pytest.raises(InvedgeError):
        train(tiny(old_run, epochs=1, eval_every=0, seed=5, **overrides), overwrite=True, show_progress=False)
    assert snapshot(old_run) == before and leftovers(old_run) == []


def test_overwrite_failing_in_its_first_epoch_keeps_the_old_run(old_run, monkeypatch):
    before = snapshot(old_run)

    def broken(*args, **kwargs):
        assert run_folder.staging_path(old_run).is_dir()  # the new run is being built beside the old
        raise RuntimeError("a bug in the first epoch")

    monkeypatch.setattr(train_mod, "train_one_epoch", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        train(tiny(old_run, epochs=1, eval_every=0, seed=5), overwrite=True, show_progress=False)
    assert snapshot(old_run) == before and leftovers(old_run) == []


@pytest.mark.parametrize("atomic_exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_swaps_in_the_new_run_after_its_first_epoch(old_run, monkeypatch, atomic_exchange):
    if not atomic_exchange:
        monkeypatch.setattr(run_folder, "_exchange", lambda a, b: False)
    seen = []
    real_swap = run_folder.swap_in

    def swap(staging, run_dir):
        seen.append((snapshot(run_dir) == before, sorted(p.name for p in staging.iterdir())))
        real_swap(staging, run_dir)

    before = snapshot(old_run)
    monkeypatch.setattr(run_folder, "swap_in", swap)
    result = train(tiny(old_run, epochs=2, eval_every=0, seed=5), overwrite=True, show_progress=False)
    # once, at the end of the first epoch, with the old run untouched until then
    assert seen == [(True, ["checkpoint.safetensors", "curves.png", "metrics.jsonl", "run.json"])]
    assert result.run_dir == old_run and load_checkpoint(old_run).config["train"]["seed"] == 5
    assert load_checkpoint(old_run).epoch == 2 and [m["epoch"] for m in read_metrics(old_run)] == [1, 2]
    assert (old_run / "notes" / "mine.txt").read_text() == "the user's"  # the user's files stay
    assert leftovers(old_run) == []


@pytest.mark.parametrize("steps", [0, 3], ids=["before-its-first-step", "in-its-first-epoch"])
def test_overwrite_interrupted_before_its_first_epoch_ends_keeps_the_old_run(old_run, monkeypatch, steps):
    before = snapshot(old_run)
    monkeypatch.setattr(StopAfter, "checks", steps)
    monkeypatch.setattr(train_mod, "StopFlag", StopAfter)
    cut = train(tiny(old_run, epochs=1, eval_every=0, seed=5), overwrite=True, show_progress=False)
    assert cut.interrupted and cut.kept_old
    assert snapshot(old_run) == before and leftovers(old_run) == []
    assert load_checkpoint(old_run).config["train"]["seed"] != 5  # still the finished old run


def test_a_rerun_cleans_up_what_a_killed_run_left(old_run):
    """The states a kill -9 can leave (see recover_run_folder), each followed by a rerun."""
    staging, replaced = run_folder.staging_path(old_run), run_folder.replaced_path(old_run)
    before = snapshot(old_run)
    # killed while building the new run: a staging folder and temporary files of atomic writes
    staging.mkdir()
    (staging / "checkpoint.safetensors").write_bytes(b"half")
    (old_run / ".checkpoint.safetensors.abc123.tmp").write_bytes(b"half")
    (old_run / ".run.json.x7.tmp").write_text("{")
    run_folder.recover_run_folder(old_run)
    assert snapshot(old_run) == before and leftovers(old_run) == []
    # killed between the two renames of a non-atomic swap: RUN gone, the complete new run staged
    new_files = snapshot(old_run)
    old_run.rename(replaced)
    staging.mkdir()
    for name, data in new_files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    run_folder.recover_run_folder(old_run)
    assert snapshot(old_run) == new_files and leftovers(old_run) == []
    # and with no staged run at all, the old one goes back
    old_run.rename(replaced)
    run_folder.recover_run_folder(old_run)
    assert snapshot(old_run) == new_files and leftovers(old_run) == []
    # a real rerun after a kill: it starts over cleanly and succeeds
    staging.mkdir()
    (staging / "run.json").write_text("{}")
    train(tiny(old_run, epochs=1, eval_every=0, seed=6), overwrite=True, show_progress=False)
    assert load_checkpoint(old_run).config["train"]["seed"] == 6 and leftovers(old_run) == []


def test_a_locked_run_folder_is_refused_at_once(old_run):
    from invspread_edge_runtime.errors import LockedError
    from invspread_edge_runtime.locks import exclusive_lock

    before = snapshot(old_run)
    with exclusive_lock(old_run, "run folder"):
        with pytest.raises(
            LockedError, match=f"{old_run} is being written by another thread of this process"
        ):
            train(tiny(old_run, epochs=1, eval_every=0), overwrite=True, show_progress=False)
        with pytest.raises(LockedError, match=r"pid \d+"):
            train(TrainConfig(out=str(old_run)), resume=True, epochs=2, show_progress=False)
    assert snapshot(old_run) == before


def test_out_is_a_file_and_resume_of_a_file(tmp_path, old_run):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InvedgeError, match="is a file, not a folder"):
        train(tiny(blocker), show_progress=False)
    with pytest.raises(InvedgeError, match="--resume takes a run folder"):
        train(TrainConfig(out=str(old_run / "checkpoint.safetensors")), resume=True, show_progress=False)
    assert blocker.read_text() == "x"


# --- --resume of damaged or foreign run folders: one error, nothing touched ----------------------


def _rewrite_checkpoint(run, train=None, **changes):
    """Save the run's checkpoint again with parts of its state replaced (`train`: training settings)."""
    from invspread_edge.checkpoint import save_checkpoint

    ckpt = load_checkpoint(run)
    config = changes.pop("config", ckpt.config)
    if train is not None:
        config = dict(config, train=dict(config["train"], **train))
    extra = changes.pop("extra", ckpt.extra)
    model = changes.pop("model", build_model(ckpt))
    save_checkpoint(run / "checkpoint.safetensors", model, config, ckpt.epoch, ckpt.step, None, None, extra)


def _damage(kind, run):
    ckpt = load_checkpoint(run)
    if kind == "metrics-line":
        (run / "metrics.jsonl").write_text('{"epoch": 1, "loss": 4.9}\n{"epoch": 2, "lo')
    elif kind == "metrics-not-records":
        (run / "metrics.jsonl").write_text("[1, 2]\n")
    elif kind == "run-json-list":
        (run / "run.json").write_text("[1, 2, 3]\n")
    elif kind == "run-json-foreign":
        (run / "run.json").write_text('{"format": "another-tool/1", "name": "x"}\n')
    elif kind == "another-arch":
        _rewrite_checkpoint(run, train={"arch": "cifar_resnet34"})
    elif kind == "another-width":
        _rewrite_checkpoint(run, train={"width": 16})
    elif kind == "setting-of-wrong-type":
        _rewrite_checkpoint(run, train={"batch_size": "32"})
    elif kind == "setting-rejected":
        _rewrite_checkpoint(run, train={"temperature": 0.0})
    elif kind == "partial-epoch":
        _rewrite_checkpoint(run, extra={"partial_epoch": {"steps": "three"}})
    elif kind == "no-train-settings":
        _rewrite_checkpoint(run, config={k: v for k, v in ckpt.config.items() if k != "train"})


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("metrics-line", "metrics.jsonl line 2 is damaged"),
        ("metrics-not-records", "metrics.jsonl line 1 is damaged"),
        ("run-json-list", "not a JSON object"),
        ("run-json-foreign", "not an 'invedge train' run.json"),
        ("another-arch", "weights do not fit architecture 'cifar_resnet34'"),
        ("another-width", "weights do not fit"),
        ("setting-of-wrong-type", "setting 'batch_size' is '32'"),
        ("setting-rejected", "stores settings training rejects"),
        ("partial-epoch", "does not fit the model"),
        ("no-train-settings", "not written by 'invedge train'"),
    ],
)
def test_resume_of_a_damaged_run_is_one_error(old_run, kind, match):
    _damage(kind, old_run)
    before = snapshot(old_run)
    with pytest.raises(InvedgeError, match=match):
        train(TrainConfig(out=str(old_run)), resume=True, epochs=2, show_progress=False)
    assert snapshot(old_run) == before


def test_resume_into_an_unwritable_folder_fails_before_training(old_run, monkeypatch):
    monkeypatch.setattr(train_mod, "train_one_epoch", lambda *a, **k: pytest.fail("trained"))
    with read_only(old_run), pytest.raises(InvedgeError, match=f"cannot write in {old_run}") as info:
        train(TrainConfig(out=str(old_run)), resume=True, epochs=2, show_progress=False)
    assert "writable, then resume" in str(info.value)


def test_new_run_in_an_unwritable_folder_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "train_one_epoch", lambda *a, **k: pytest.fail("trained"))
    out = tmp_path / "out"
    out.mkdir()
    with read_only(out), pytest.raises(InvedgeError, match="cannot write in"):
        train(tiny(out, epochs=1, eval_every=0), show_progress=False)


def test_disk_full_at_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch):
    import errno

    from invspread_edge_runtime.files import os_error

    run = tmp_path / "run"
    calls = []
    real_save = checkpoint.save_checkpoint

    def save(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the start, epoch 1, then the disk is full at epoch 2
            raise os_error(OSError(errno.ENOSPC, "No space left on device"), path)
        real_save(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    with pytest.raises(InvedgeError, match="disk full while writing") as info:
        train(tiny(run, epochs=2, eval_every=0), show_progress=False)
    assert f"invedge train --resume {run}" in str(info.value)
    assert load_checkpoint(run).epoch == 1
    monkeypatch.setattr(checkpoint, "save_checkpoint", real_save)
    assert train(TrainConfig(out=str(run)), resume=True, show_progress=False).epochs_done == 2


def test_trains_on_a_folder_with_a_file_name_that_is_not_utf8(tmp_path, image_folder):
    import os

    folder = tmp_path / "imgs"
    shutil.copytree(image_folder, folder)
    src = next((folder / "class0").glob("*.png"))
    os.rename(src, os.fsencode(folder / "class0") + b"/caf\xe9.png")
    result = train(
        tiny(tmp_path / "run", data=str(folder), image_size=16, limit=None, batch_size=20, epochs=1),
        show_progress=False,
    )
    assert result.epochs_done == 1 and result.skipped_images == 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(temperature=0.0), "--temperature 0 is out of range. Use 0.01 to 10"),
        (dict(temperature=float("nan")), "--temperature nan is not a number"),
        (dict(negative_weight=0.5), "negative_weight must be >= 1"),
        (dict(lr=float("nan")), "--lr nan is not a number"),
        (dict(lr=float("inf")), "--lr inf is out of range. Use a number above 0 and at most 100"),
        (dict(momentum=1.5), "momentum must be in"),
        (dict(weight_decay=-1.0), "weight decay -1 is out of range. Use 0 to 1"),
        (dict(weight_decay=float("inf")), "weight decay inf is out of range"),
        (dict(embedding_dim=0), "--embedding-dim 0 is out of range"),
        (dict(embedding_dim=100_000), "--embedding-dim 100000 is out of range. Use 1 to 8192"),
        (dict(width=100_000), "--width 100000 is out of range. Use 1 to 256"),
        (dict(image_size=100_000), "--image-size 100000 is out of range. Use 8 to 1024"),
        (dict(image_size=1024, batch_size=1024), "--batch-size 1024 at 1024 px .* Use --batch-size 2 to 256"),
        (dict(image_size=64, aug="size=1024", batch_size=1024), "--batch-size 1024 at 1024 px"),
        (dict(batch_size=10**6), "--batch-size 1000000 is out of range. Use 2 to 16384"),
        (dict(epochs=10**20), "--epochs 100000000000000000000 is out of range"),
        (dict(seed=-1), "--seed -1 is out of range"),
        (dict(seed=2**64), "--seed 18446744073709551616 is out of range. Use 0 to 4294967295"),
        (dict(limit=0), "--limit 0 is out of range"),
        (dict(workers=10_000), "--workers 10000 is out of range. Use 0 to 256"),
        (dict(classes="0-99999999999"), "--classes 99999999999 is out of range. Use 0 to 99999"),
        (dict(eval_memory=-5), "--eval-memory -5 is out of range. Use 0 to 1000000000 \\(0: all\\)"),
        (dict(save_every_steps=10**12), "--save-every-steps 1000000000000 is out of range"),
    ],
)
def test_values_the_library_rejects_are_config_errors(tmp_path, overrides, match):
    from invspread_edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        train(tiny(tmp_path / "run", **overrides), show_progress=False)
    assert not (tmp_path / "run").exists()


def test_a_relative_folder_is_stored_absolute(tmp_path, image_folder, monkeypatch):
    monkeypatch.chdir(image_folder.parent)
    train(tiny(tmp_path / "run", data=image_folder.name, image_size=16, limit=None, batch_size=20,
               epochs=1, eval_every=0), show_progress=False)  # fmt: skip
    assert load_checkpoint(tmp_path / "run").config["data"] == str(image_folder)


def test_resume_after_the_training_folder_moved(tmp_path, image_folder):
    folder = tmp_path / "imgs"
    shutil.copytree(image_folder, folder)
    run = tmp_path / "run"
    train(tiny(run, data=str(folder), image_size=16, limit=None, batch_size=20, epochs=1, eval_every=0),
          show_progress=False)  # fmt: skip
    folder.rename(tmp_path / "elsewhere")
    before = snapshot(run)
    with pytest.raises(DataError, match=f"{run} was trained on .*which cannot be opened here") as info:
        train(TrainConfig(out=str(run)), resume=True, epochs=2, show_progress=False)
    assert "Put the training data back" in str(info.value) and snapshot(run) == before


def test_overwrite_of_the_working_directory(old_run, monkeypatch):
    """`--out .` inside the run: the swap renames the folder the process stands in."""
    monkeypatch.chdir(old_run)
    result = train(tiny(".", epochs=2, eval_every=0, seed=5), overwrite=True, show_progress=False)
    assert result.epochs_done == 2 and str(result.run_dir) == "."
    ckpt = load_checkpoint(old_run)
    assert ckpt.config["train"]["seed"] == 5 and ckpt.epoch == 2 and leftovers(old_run) == []
    assert (old_run / "notes" / "mine.txt").read_text() == "the user's"
