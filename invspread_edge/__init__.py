"""invspread-edge training: the Invariant and Spreading Instance Feature method (Ye et al., CVPR 2019).

Heavy modules (torch) load inside the functions that need them, so the CLI starts instantly:

    from invspread_edge import TrainConfig, train, evaluate_run
    result = train(TrainConfig(data="fashion-mnist", epochs=20, out="runs/fmnist"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from invspread_edge_runtime.lazy import lazy_getattr
from invspread_edge_runtime.version import __version__  # the project's one version (runtime/…/VERSION)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "__version__",
    "build_model",
    "evaluate_pixels",
    "evaluate_run",
    "evaluate_untrained",
    "load_checkpoint",
    "train",
]

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import build_model, load_checkpoint
    from .config import TrainConfig
    from .evaluate import evaluate_pixels, evaluate_run, evaluate_untrained
    from .train_events import TrainResult
    from .training import train

__getattr__ = lazy_getattr(
    __name__,
    {
        "TrainConfig": ".config",
        "TrainResult": ".train_events",
        "train": ".training",
        "evaluate_run": ".evaluate",
        "evaluate_pixels": ".evaluate",
        "evaluate_untrained": ".evaluate",
        "build_model": ".checkpoint",
        "load_checkpoint": ".checkpoint",
    },
)
