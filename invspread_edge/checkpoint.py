"""The run folder's checkpoint: one safetensors file with everything needed to resume.

Layout of `checkpoint.safetensors` (no pickle anywhere):
- tensors `model.<name>`: the encoder's state dict;
- tensors `optimizer.<param index>.<name>`: per-parameter optimizer state (SGD momentum);
- tensors `rng.<name>`: random generator states, so a resumed run continues the same stream;
- metadata `format` = FORMAT and `state` = JSON of config, epoch, step, optimizer param_groups and
  `extra` (small JSON values the training loop needs to resume mid-epoch: running sums, scaler state).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invspread_edge_runtime.errors import CheckpointError
from invspread_edge_runtime.files import atomic_path, sha256_file

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
    from safetensors.torch import save_file

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
    for name, value in (rng or {}).items():
        tensors[f"rng.{name}"] = value.detach().cpu().contiguous()
    metadata = {"format": FORMAT, "state": json.dumps(state)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint(run_or_file: str | os.PathLike[str]) -> Checkpoint:
    """Load and validate; a truncated, foreign or non-safetensors file raises CheckpointError."""
    from safetensors import safe_open

    path = checkpoint_path(run_or_file)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path} is not an invspread-edge checkpoint (format {metadata.get('format')!r})"
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

    optimizer_state = None
    if "optimizer" in state:
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, idx, name = key.split(".", 2)
                per_param.setdefault(int(idx), {})[name] = value
        for idx, extra in state["optimizer"]["extras"].items():
            per_param.setdefault(int(idx), {}).update(extra)
        optimizer_state = {"state": per_param, "param_groups": state["optimizer"]["param_groups"]}
    return Checkpoint(
        config=state["config"],
        model_state={k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")},
        epoch=int(state["epoch"]),
        step=int(state["step"]),
        optimizer_state=optimizer_state,
        rng={k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")},
        path=path,
        sha256=sha256_file(path),
        extra=state.get("extra", {}),
    )


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
            f"{ckpt.path}: weights do not fit architecture {cfg['arch']!r} ({first})"
        ) from exc
    return model.eval()
