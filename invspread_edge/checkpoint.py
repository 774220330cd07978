"""The run folder's checkpoint: one safetensors file with everything needed to resume.

Layout of `checkpoint.safetensors` (no pickle anywhere):
- tensors `model.<name>`: the encoder's state dict;
- tensors `optimizer.<param index>.<name>`: per-parameter optimizer state (SGD momentum);
- tensors `rng.<name>`: random generator states, so a resumed run continues the same stream;
- metadata `format` = FORMAT and `state` = JSON of config, epoch, step, optimizer param_groups and
  `extra` (small JSON values the training loop needs to resume mid-epoch: running sums, scaler state).

`save_checkpoint` / `load_checkpoint` read and write the file; `Checkpointer` (rank 0's writer of a
run's resume state, with run.json) and `restore_training_state` (its reader) are the one place
that knows which parts of `extra` and `rng` the training loop keeps.

Neither writer nor reader takes NaN or inf weights (a diverged run's: written over the last good
checkpoint they would leave nothing to go back to; read, they embed everything as NaN), and a
resume also refuses NaN or inf optimizer state.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from invspread_edge_export.parity import nonfinite_tensors, require_finite_tensors, tensors_named
from invspread_edge_runtime import hooks
from invspread_edge_runtime.errors import CheckpointError, NonFiniteError
from invspread_edge_runtime.files import atomic_path, sha256_file

from .config import fits
from .train_events import EpochStats

if TYPE_CHECKING:  # pragma: no cover
    from .run_folder import RunFolder  # run_folder imports this module

FORMAT = "invspread-edge/checkpoint/1"
CHECKPOINT_NAME = "checkpoint.safetensors"
RUN_JSON = "run.json"


@dataclass
class Checkpoint:
    config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    epoch: int
    step: int
    optimizer_state: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(run_or_file: str | os.PathLike[str]) -> Path:
    """Accept a run folder or the checkpoint file itself."""
    path = Path(run_or_file)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.suffix == ".onnx":
        raise CheckpointError(
            f"{path} is an ONNX model, not a training checkpoint",
            "Pass the run folder (the one holding checkpoint.safetensors)",
        )
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}", "Train one with 'invedge train --out RUN_DIR'")
    return path


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: dict[str, Any],
    epoch: int,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write atomically: a kill at any moment leaves the previous checkpoint intact."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state: dict[str, Any] = {"config": config, "epoch": epoch, "step": step, "extra": extra or {}}
    if optimizer is not None:
        opt = optimizer.state_dict()
        extras: dict[str, dict[str, Any]] = {}
        for idx, param_state in opt["state"].items():
            for name, value in param_state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().contiguous()
                else:
                    extras.setdefault(str(idx), {})[name] = value
        state["optimizer"] = {"param_groups": opt["param_groups"], "extras": extras}
    _refuse_nonfinite(path, tensors, step)
    for name, value in (rng or {}).items():
        tensors[f"rng.{name}"] = value.detach().cpu().contiguous()
    metadata = {"format": FORMAT, "state": json.dumps(state)}
    # Serialised in memory, written by Python's own I/O: a full disk or a read-only folder raises
    # OSError with its errno (atomic_path turns it into one line and keeps the previous file), where
    # safetensors' own writer raises its SafetensorError with the OS error inside its message.
    data = save(tensors, metadata=metadata)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        half = len(data) // 2
        fh.write(data[:half])
        if Path(path).exists():  # a kill's worst moment: half the new file written, the previous in place
            fh.flush()
            hooks.reached("checkpoint-save")
        fh.write(data[half:])


def _refuse_nonfinite(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], step: int) -> None:
    """A checkpoint is written only with finite weights and optimizer state: NaN weights over the
    last good checkpoint would leave nothing to go back to."""
    bad = nonfinite_tensors(tensors)
    if bad:
        raise NonFiniteError(
            f"the weights at step {step} hold NaN or infinite values in {tensors_named(bad)}; "
            f"{Path(path).name} was not written",
            "Train again with a lower --lr or a milder --aug",
        )


def load_checkpoint(run_or_file: str | os.PathLike[str]) -> Checkpoint:
    """Load and validate; a truncated, foreign or non-safetensors file raises CheckpointError."""
    from safetensors import safe_open

    path = checkpoint_path(run_or_file)
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"cannot read {path}: permission denied", "Make it readable (chmod u+r)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path} is not an invspread-edge checkpoint (format {metadata.get('format')!r})",
                    "Pass a run folder written by 'invedge train'",
                )
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
        state = json.loads(metadata["state"])
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(
            f"{path} is damaged or not a safetensors file ({exc.__class__.__name__})",
            "Use an intact checkpoint; training rewrites it atomically each epoch",
        ) from exc

    return _checkpoint_from(path, state, tensors)


def _checkpoint_from(path: Path, state: Any, tensors: dict[str, torch.Tensor]) -> Checkpoint:
    """Validate the whole stored state: a file with our format tag but a missing or mistyped field
    raises CheckpointError naming the field, never a KeyError or TypeError later."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"{path} carries our format tag but its {what}",
            "Use an intact checkpoint written by 'invedge train'",
        )

    if not isinstance(state, dict):
        raise bad("state is not a JSON object")
    config = state.get("config")
    if not isinstance(config, dict):
        raise bad("config is missing or not an object")
    check_model_config(config, bad)
    for name in ("epoch", "step"):
        if not _is_int(state.get(name)) or state[name] < 0:
            raise bad(f"{name!r} is missing or not a whole number >= 0")
    extra = state.get("extra", {})
    if not isinstance(extra, dict):
        raise bad("'extra' is not an object")
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    if not model_state:
        raise bad("weights are missing (no 'model.' tensors)")
    require_finite_tensors(model_state, str(path))

    optimizer_state = None
    if "optimizer" in state:
        opt = state["optimizer"]
        if (
            not isinstance(opt, dict)
            or not isinstance(opt.get("param_groups"), list)
            or not all(isinstance(g, dict) for g in opt["param_groups"])
            or not isinstance(opt.get("extras", {}), dict)
            or not all(isinstance(v, dict) for v in opt.get("extras", {}).values())
        ):
            raise bad("optimizer state is malformed")
        per_param: dict[int, dict[str, Any]] = {}
        try:
            for key, value in tensors.items():
                if key.startswith("optimizer."):
                    _, idx, name = key.split(".", 2)
                    per_param.setdefault(int(idx), {})[name] = value
            for idx, extra_state in opt.get("extras", {}).items():
                per_param.setdefault(int(idx), {}).update(extra_state)
        except ValueError as exc:
            raise bad("optimizer tensors are misnamed") from exc
        optimizer_state = {"state": per_param, "param_groups": opt["param_groups"]}
    return Checkpoint(
        config=config,
        model_state=model_state,
        epoch=int(state["epoch"]),
        step=int(state["step"]),
        optimizer_state=optimizer_state,
        rng={k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")},
        path=path,
        sha256=sha256_file(path),
        extra=extra,
    )


def check_model_config(config: dict[str, Any], bad: Any) -> None:
    """The keys every reader of a checkpoint (eval, export, resume) relies on, with their types."""
    if not isinstance(config.get("arch"), str):
        raise bad("config has no architecture ('arch')")
    for name in ("embedding_dim", "image_size"):
        if not _is_int(config.get(name)) or config[name] < 1:
            raise bad(f"config's {name!r} is missing or not a whole number >= 1")
    if "width" in config and (not _is_int(config["width"]) or config["width"] < 1):
        raise bad("config's 'width' is not a whole number >= 1")
    for name in ("mean", "std"):
        values = config.get(name)
        if (
            not isinstance(values, list)
            or len(values) != 3
            or not all(_is_number(v) and math.isfinite(v) for v in values)
        ):
            raise bad(f"config's {name!r} is missing or not three numbers")
    if any(v <= 0 for v in config["std"]):
        raise bad("config's 'std' has a value <= 0")
    if "data" in config and not isinstance(config["data"], str):
        raise bad("config's 'data' is not a string")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def build_model(ckpt: Checkpoint) -> nn.Module:
    """The encoder of a checkpoint, weights loaded, in eval mode."""
    from .model import create_model

    cfg = ckpt.config
    model = create_model(cfg["arch"], width=cfg.get("width", 64), embedding_dim=cfg["embedding_dim"])
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(
            f"{ckpt.path}: weights do not fit architecture {cfg['arch']!r} ({first})",
            "Use an intact checkpoint written by 'invedge train'",
        ) from exc
    return model.eval()


# --- the training loop's state: written by rank 0, read back by a resume -------------------------


@dataclass
class Checkpointer:
    """Rank 0's writer of everything a resume needs: checkpoint.safetensors, then run.json (so
    run.json never names a step the checkpoint does not hold)."""

    folder: RunFolder
    model: nn.Module  # the plain model: no DDP wrapper, not compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    saved: tuple[int, int] | None = None  # (epochs done, step) of the last save by this process

    def save(self, epochs_done: int, step: int, status: str, partial: EpochStats | None = None) -> None:
        """`partial`: the running totals of an epoch cut at `step` (a mid-epoch save or a Ctrl-C)."""
        extra: dict[str, Any] = {"partial_epoch": {}}
        if partial is not None:
            extra["partial_epoch"] = {k: v for k, v in asdict(partial).items() if k != "interrupted"}
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        rng = {"torch_cpu": torch.get_rng_state()}
        config = self.folder.info["config"]
        with self.folder.write_errors():
            save_checkpoint(
                self.folder.target / CHECKPOINT_NAME,
                self.model,
                config,
                epochs_done,
                step,
                self.optimizer,
                rng,
                extra,
            )
            self.folder.write_info(epochs_done, step, status, partial.skipped if partial else 0)
        self.saved = (epochs_done, step)


def restore_training_state(
    ckpt: Checkpoint,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    steps_per_epoch: int,
    run_dir: Path,
) -> tuple[int, int, EpochStats]:
    """Load what `Checkpointer.save` kept into the optimizer, the scaler and the generator;
    (start epoch, global step, the cut epoch's totals)."""
    if ckpt.optimizer_state is not None and ckpt.path is not None:
        momentum = {
            f"optimizer.{idx}.{name}": value
            for idx, param_state in ckpt.optimizer_state["state"].items()
            for name, value in param_state.items()
            if isinstance(value, torch.Tensor)
        }
        require_finite_tensors(momentum, str(ckpt.path), "optimizer state")
    try:
        if ckpt.optimizer_state is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
        partial = restore_partial_epoch(ckpt.extra.get("partial_epoch", {}))
        if scaler is not None and "scaler" in ckpt.extra:
            scaler.load_state_dict(ckpt.extra["scaler"])
        if "torch_cpu" in ckpt.rng:
            torch.set_rng_state(ckpt.rng["torch_cpu"])
    except (ValueError, TypeError, KeyError, RuntimeError, IndexError) as exc:
        raise CheckpointError(
            f"{ckpt.path}: the saved training state does not fit the model "
            f"({str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__})",
            "Use an intact checkpoint written by 'invedge train'",
        ) from exc
    if partial.steps != ckpt.step - ckpt.epoch * steps_per_epoch:
        raise CheckpointError(
            f"{run_dir}: checkpoint step {ckpt.step} does not fit its epoch {ckpt.epoch}",
            "Use an intact checkpoint written by 'invedge train'",
        )
    return ckpt.epoch, ckpt.step, partial


def restore_partial_epoch(stored: Any) -> EpochStats:
    """The running totals of a cut epoch, validated (a checkpoint's `extra.partial_epoch`)."""
    names = {f.name: str(f.type) for f in fields(EpochStats) if f.name != "interrupted"}
    if not isinstance(stored, dict) or not all(k in names and fits(v, names[k]) for k, v in stored.items()):
        raise ValueError(f"partial_epoch is malformed: {stored!r}"[:160])
    return EpochStats(**{k: float(v) if names[k] == "float" else v for k, v in stored.items()})
