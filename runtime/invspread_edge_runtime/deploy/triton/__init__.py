"""A Triton model repository from an export folder: an ensemble that takes encoded images and
returns the same vectors as `invedge embed` (see `repository`; the configs in `config`)."""

from .repository import (
    DEVICES,
    EMBEDDINGS,
    ModelNames,
    TritonEngine,
    TritonOptions,
    TritonRepository,
    base_name,
    check_repository_target,
    check_target,
    write_repository,
)

__all__ = [
    "DEVICES",
    "EMBEDDINGS",
    "ModelNames",
    "TritonEngine",
    "TritonOptions",
    "TritonRepository",
    "base_name",
    "check_repository_target",
    "check_target",
    "write_repository",
]
