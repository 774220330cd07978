"""A training run's settings (`TrainConfig`) and the checks that reject bad ones before any work.

Torch-free at import, so `invedge train --help` reads its defaults from here without loading torch.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invspread_edge_runtime.errors import CheckpointError, ConfigError, InvedgeError

if TYPE_CHECKING:  # pragma: no cover
    import torch

SCHEDULES = ("step", "cosine", "constant")  # the learning-rate schedules (training.learning_rate)
MIN_IMAGE_SIZE = 8  # the smallest training size (three stride-2 stages leave 1 pixel)


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in run.json and the checkpoint, restored by --resume."""

    data: str = "fashion-mnist"
    out: str = "runs/train"
    arch: str = "cifar_resnet18"
    width: int = 64
    embedding_dim: int = 128
    image_size: int | None = None  # None: native size of in-memory sets; a folder's own up to 64 px
    preset: str = "natural"  # augment_spec.PRESETS
    aug: str = ""  # `key=value,...` over the preset; a new run stores its whole resolved spec here
    init: str | None = None  # weights to start from: a run, a checkpoint or a state dict (init_weights.py)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    temperature: float = 0.1
    negative_weight: float = 1.0
    detach_keys: bool = True
    limit: int | None = None
    classes: str | None = None
    seed: int = 0
    workers: int = 2
    precision: str = "auto"
    device: str = "auto"
    channels_last: bool | None = None  # None: where faster (CUDA; bf16 on CPUs)
    sync_bn: bool = False
    compile: bool = False  # torch.compile the training forward and backward (needs a C++ compiler on CPUs)
    eval_every: int = 1  # 0: never during training
    eval_memory: int = 10000  # kNN monitor: at most this many train images as memory (0: all)
    eval_queries: int = 2000  # and this many test images as queries (0: all)
    save_every_steps: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "the stored settings") -> TrainConfig:
        """The known keys of `d`, each checked against its field's type (CheckpointError if not)."""
        kept = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            if not fits(value, str(f.type)):
                raise CheckpointError(
                    f"{source}: setting {f.name!r} is {value!r}, not {f.type}",
                    "Use an intact checkpoint written by 'invedge train'",
                )
            kept[f.name] = float(value) if str(f.type) == "float" else value
        return cls(**kept)


def fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value has a dataclass field's type ('int', 'float', 'str | None', ...)."""
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None" and value is None:
            return True
        if part == "bool" and isinstance(value, bool):
            return True
        if part == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if part == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if part == "str" and isinstance(value, str):
            return True
    return False


def check_config(cfg: TrainConfig) -> None:
    """Reject bad options before any work, saying what is allowed."""
    problems = []
    if cfg.epochs < 1:
        problems.append("--epochs must be at least 1")
    if cfg.batch_size < 2:
        problems.append("--batch-size must be at least 2 (negatives come from the batch)")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        problems.append("--lr must be a number > 0")
    if not (math.isfinite(cfg.momentum) and 0 <= cfg.momentum < 1):
        problems.append("momentum must be in [0, 1)")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        problems.append("weight decay must be >= 0")
    if cfg.width < 1:
        problems.append("--width must be at least 1")
    if cfg.embedding_dim < 1:
        problems.append("--embedding-dim must be at least 1")
    if cfg.image_size is not None and cfg.image_size < MIN_IMAGE_SIZE:
        problems.append(f"--image-size must be at least {MIN_IMAGE_SIZE}")
    if cfg.schedule not in SCHEDULES:
        problems.append(f"--schedule must be one of {', '.join(SCHEDULES)}")
    if cfg.limit is not None and cfg.limit < 1:
        problems.append("--limit must be at least 1")
    if cfg.seed < 0:
        problems.append("--seed must be >= 0")
    if min(cfg.workers, cfg.eval_every, cfg.save_every_steps, cfg.eval_memory, cfg.eval_queries) < 0:
        problems.append(
            "--workers, --eval-every, --eval-memory, --eval-queries and --save-every-steps must be >= 0"
        )
    if problems:
        raise ConfigError("; ".join(problems))
    from . import augment_spec
    from .loss import InvariantSpreadLoss
    from .model import ARCHS

    InvariantSpreadLoss(cfg.temperature, cfg.negative_weight)  # raises ConfigError for a bad T or m
    augment_spec.resolve(cfg.preset, cfg.aug)  # raises ConfigError naming the bad key or value
    if cfg.arch not in ARCHS:
        raise ConfigError(f"Invalid architecture {cfg.arch!r}. Only {', '.join(ARCHS)} are supported.")


def check_compiler(device: torch.device) -> None:
    """torch.compile's CPU kernels are C++ (Triton on CUDA): without a compiler, say so before any
    data is loaded instead of failing with a compiler traceback at the first step."""
    cxx = os.environ.get("CXX", "g++")
    if device.type != "cuda" and not (shutil.which(cxx) or shutil.which("clang++")):
        raise InvedgeError(
            f"--compile needs a C++ compiler on the CPU ({cxx} not found)",
            "Install g++ (apt install g++) or drop --compile",
        )


def absolute_data(spec: str) -> str:
    """A folder given as a relative path, made absolute: eval, export and --resume then find the
    training images from any working directory (named sets and KIND:PATH specs stay as given)."""
    from invspread_edge_runtime.datasets import _BINARY_READERS

    if spec in ("fashion-mnist", "fashion_mnist", "fmnist") or spec.partition(":")[0] in _BINARY_READERS:
        return spec
    folder = Path(spec).expanduser()
    return str(folder.absolute()) if folder.is_dir() else spec


def absolute_init(spec: str) -> str:
    """--init's path made absolute (run.json records where the weights came from); it must exist."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(
            f"--init {spec}: no such file or folder",
            "Pass a run folder, a checkpoint.safetensors, or a state dict (.safetensors or weights-only .pth)",
        )
    return str(path.absolute())
