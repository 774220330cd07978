"""The ModelMeta of an export, from a checkpoint's config: what the runtime must know to preprocess."""

from __future__ import annotations

from typing import Any

from invspread_edge_runtime.errors import CheckpointError
from invspread_edge_runtime.metadata import ModelMeta
from invspread_edge_runtime.version import __version__ as TOOLKIT_VERSION

REQUIRED_KEYS = ("arch", "embedding_dim", "image_size", "mean", "std")


def meta_from_config(config: dict[str, Any], checkpoint_sha256: str, precision: str = "fp32") -> ModelMeta:
    """Build and validate the metadata of the FP32 export of a checkpoint with this `config`."""
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"checkpoint config lacks {', '.join(missing)}; it is not a complete run")
    try:
        meta = ModelMeta(
            arch=str(config["arch"]),
            image_size=int(config["image_size"]),
            embedding_dim=int(config["embedding_dim"]),
            mean=tuple(float(v) for v in config["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in config["std"]),  # type: ignore[arg-type]
            checkpoint_sha256=checkpoint_sha256,
            toolkit_version=TOOLKIT_VERSION,
            precision=precision,
            extra={"width": str(config["width"])} if "width" in config else {},
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config has bad preprocessing values: {exc}") from exc
    meta.validate("checkpoint config")
    return meta
