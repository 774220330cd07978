"""A training run's settings (`TrainConfig`) and the checks that reject bad ones before any work.

Torch-free at import, so `invedge train --help` reads its defaults from here without loading torch.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invspread_edge_runtime.bounds import BATCH, Bound, K, check_bounds
from invspread_edge_runtime.errors import CheckpointError, ConfigError, InvedgeError

from .augment_spec import DEFAULT_PRESET, KEYS, PRESETS, resolve
from .sizes import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

if TYPE_CHECKING:  # pragma: no cover
    import torch

SCHEDULES = ("step", "cosine", "constant")  # the learning-rate schedules (training.learning_rate)
# images × side² of one training step per process (side: the image or view size, the larger):
# 2^28 pixels are 6 GB of float32 two-view input (256 images at 1024 px, 1024 at 512, 16 384 at 128)
MAX_STEP_PIXELS = 2**28
# an augment-preview draws images × views views at its size: 2^26 pixels (8 × 8 at 1024 px) is
# 800 MB of float32 views, a PNG 8 thumbnails wide
MAX_PREVIEW_PIXELS = 2**26
COUNT_MAX = 10**9  # image counts that cap a subset (--limit, --eval-memory): beyond any data set


def option(
    default: Any,
    help: str,
    *,
    short: str = "",
    bound: Bound | None = None,
    shown: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A setting that is also an `invedge train` flag (`--batch-size` for `batch_size`): its help,
    short form and range travel with it, and `commands/train.py` builds the flag from them.
    `bound`: the range, refused before any work; `shown`: the default --help names, where the
    command line's differs from the library's; `metavar`: the value's name in --help (PATH for a
    path kept as a string), where the type's does not say it."""
    metadata = {"help": help, "short": short, "bound": bound, "shown": shown, "metavar": metavar}
    return field(default=default, metadata=metadata)


def python_only(default: Any, bound: Bound | None = None) -> Any:
    """A setting with no flag: Python callers may set it, the command line keeps the default."""
    return field(default=default, metadata={"flag": False, "bound": bound})


@dataclass
class TrainConfig:
    """Everything a run depends on; stored in run.json and the checkpoint, restored by --resume.

    Every field made by `option` is an `invedge train` flag, with its help and range, in the
    order `invedge train --help` lists them (and their ranges are checked).
    """

    data: str = option(
        "fashion-mnist", "fashion-mnist, cifar10:PATH, cifar100:PATH, stl10:PATH, or a folder.", short="-d"
    )
    out: str = option(
        "runs/train", "Run folder to create.", short="-o", shown="runs/<data name>", metavar="PATH"
    )
    epochs: int = option(20, "Epochs; with --resume, train longer.", bound=Bound("--epochs", 1, 10_000))
    batch_size: int = option(  # per process; negatives come from the batch
        128,
        f"Images per step per process (batch × image size² at most {MAX_STEP_PIXELS:,}).",
        short="-b",
        bound=Bound("--batch-size", 2, 16_384),
    )
    lr: float = option(0.03, "Initial learning rate.", bound=Bound("--lr", 0, 100, above=True))
    momentum: float = python_only(0.9)
    weight_decay: float = python_only(5e-4, Bound("weight decay", 0, 1))
    schedule: str = option("step", f"{', '.join(SCHEDULES)} (step: the recipe's).")
    arch: str = option("cifar_resnet18", "cifar_resnet18, cifar_resnet34, resnet18/34/50.")
    # 4x the paper's 64: 180 M parameters
    width: int = option(64, "Channels of the first stage (64: the paper's).", bound=Bound("--width", 1, 256))
    embedding_dim: int = option(128, "Embedding size.", bound=Bound("--embedding-dim", 1, 8192))
    # None: native size of in-memory sets; a folder's own up to 64 px
    image_size: int | None = option(
        None,
        "Training size (default: native; a folder's own size up to 64 px, else 64).",
        bound=Bound("--image-size", MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    )
    preset: str = option(
        DEFAULT_PRESET, f"Augmentation preset: {', '.join(PRESETS)} ({DEFAULT_PRESET}: the paper's)."
    )
    # `key=value,...` over the preset; a new run stores its whole resolved spec here
    aug: str = option("", f"Augmentation over the preset, key=value,... with keys {', '.join(KEYS)}.")
    # weights to start from: a run, a checkpoint or a state dict (init_weights.py)
    init: str | None = option(
        None,
        "Start from these weights: a run folder, a checkpoint, or a state dict "
        "(.safetensors, weights-only .pth).",
        metavar="PATH",
    )
    temperature: float = option(  # the paper 0.1; 0.05-0.5 are sensible
        0.1, "Loss temperature T.", bound=Bound("--temperature", 0.01, 10)
    )
    negative_weight: float = python_only(1.0)
    detach_keys: bool = option(
        True,
        "Gradient through each similarity's row only, as the authors' code, or through both sides "
        "(--no-detach-keys, as SimCLR).",
    )
    limit: int | None = option(
        None, "Train on the first N images of a fixed shuffle.", bound=Bound("--limit", 1, COUNT_MAX)
    )
    classes: str | None = option(None, "Train on these classes only, e.g. 0-4.")
    seed: int = option(0, "Random seed.", bound=Bound("--seed", 0, 2**32 - 1))
    workers: int = option(2, "Decoding processes for folders.", bound=Bound("--workers", 0, 256))
    precision: str = option("auto", "auto, fp32, bf16 or fp16 (CUDA).")
    device: str = option("auto", "auto, cpu or cuda.")
    channels_last: bool | None = python_only(None)  # None: where faster (CUDA; bf16 on CPUs)
    eval_every: int = option(
        1, "kNN accuracy every N epochs (0: off).", bound=Bound("--eval-every", 0, 10_000, zero="off")
    )
    eval_memory: int = option(
        10000, "kNN monitor memory images (0: all).", bound=Bound("--eval-memory", 0, COUNT_MAX, zero="all")
    )
    eval_queries: int = option(
        2000, "kNN monitor query images (0: all).", bound=Bound("--eval-queries", 0, COUNT_MAX, zero="all")
    )
    save_every_steps: int = option(
        0,
        "Also checkpoint every N steps (0: off).",
        bound=Bound("--save-every-steps", 0, COUNT_MAX, zero="off"),
    )
    sync_bn: bool = option(False, "SyncBatchNorm across processes (torchrun).")
    compile: bool = option(  # needs a C++ compiler on CPUs (check_compiler)
        False, "torch.compile the model: faster steps after a minute of compiling."
    )

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


# The range of every number the toolkit's verbs take (TrainConfig's from its fields; eval and
# augment-preview's here), refused in one line before any data is read or a model is built.
TRAIN_BOUNDS: dict[str, Bound] = {
    f.name: f.metadata["bound"] for f in fields(TrainConfig) if f.metadata.get("bound") is not None
}
EVAL_BOUNDS: dict[str, Bound] = {  # invedge eval: the same flags read the same
    "batch_size": BATCH,
    "workers": TRAIN_BOUNDS["workers"],
    "width": TRAIN_BOUNDS["width"],
    "k": K,
    "limit": TRAIN_BOUNDS["limit"],
}
PREVIEW_BOUNDS: dict[str, Bound] = {  # invedge augment-preview
    "image_size": TRAIN_BOUNDS["image_size"],
    "images": Bound("--images", 1, 64),
    "views": Bound("--views", 1, 16),
    "seed": TRAIN_BOUNDS["seed"],
}


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
    check_bounds(TRAIN_BOUNDS, vars(cfg))
    if not (math.isfinite(cfg.momentum) and 0 <= cfg.momentum < 1):
        raise ConfigError("momentum must be in [0, 1)")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}")
    from invspread_edge_runtime.evaluation.datasets import parse_classes

    from .loss import InvariantSpreadLoss
    from .model import ARCHS

    parse_classes(cfg.classes)  # raises ConfigError for a bad list or a class id out of range
    InvariantSpreadLoss(cfg.temperature, cfg.negative_weight)  # raises ConfigError for a bad T or m
    augment = resolve(cfg.preset, cfg.aug)  # raises ConfigError naming the bad key or value
    if cfg.image_size is not None or augment["view_size"]:
        check_step_pixels(cfg.batch_size, max(cfg.image_size or 0, augment["view_size"]))
    if cfg.arch not in ARCHS:
        raise ConfigError(f"Invalid architecture {cfg.arch!r}. Only {', '.join(ARCHS)} are supported.")


def check_step_pixels(batch_size: int, side: int) -> None:
    """The one limit two flags share: a step's images × side² (its input memory) per process."""
    if batch_size * side * side > MAX_STEP_PIXELS:
        raise ConfigError(
            f"--batch-size {batch_size} at {side} px is {batch_size * side * side:,} pixels a step, "
            f"more than {MAX_STEP_PIXELS:,} (6 GB of views)",
            f"Use --batch-size 2 to {MAX_STEP_PIXELS // (side * side)} at {side} px, or a smaller "
            "--image-size (or --aug size=S views)",
        )


def check_preview_pixels(images: int, views: int, side: int) -> None:
    """augment-preview's shared limit: images × views × side² (the float views it draws at once)."""
    if images * views * side * side > MAX_PREVIEW_PIXELS:
        raise ConfigError(
            f"--images {images} × --views {views} at {side} px is {images * views * side * side:,} "
            f"view pixels, more than a preview draws ({MAX_PREVIEW_PIXELS:,})",
            f"Use --images × --views at most {MAX_PREVIEW_PIXELS // (side * side)} at {side} px, "
            "or a smaller --image-size",
        )


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
    from invspread_edge_runtime.evaluation.datasets import _BINARY_READERS

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
