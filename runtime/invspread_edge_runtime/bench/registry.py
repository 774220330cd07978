"""The runtimes a benchmark can run, by name: the runtime's own backends plus registered extras.

The runtime package never imports torch, so the full toolkit registers its torch runtimes here
(`register_runtime("torch", ...)`, from its "invedge.runtimes" entry point, loaded on first use). A factory opens
a `Backend` for one precision, or raises `NotPresent` saying why it cannot on this machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..backends.base import Backend
from ..errors import InvedgeError
from .target import BenchTarget

ONNX_PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")
ALL_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-cpu")


class NotPresent(InvedgeError):
    """A runtime (or runtime × precision) this machine or this target cannot run; the message says why."""


@dataclass(frozen=True)
class OpenOptions:
    """What every runtime of one benchmark is opened with: the same for all, for fairness."""

    threads: int  # intra-op CPU threads
    max_batch: int  # the largest batch measured (TensorRT profiles are built to cover it)


Factory = Callable[[BenchTarget, str, OpenOptions], Backend]  # (target, precision, options) → open backend
Probe = Callable[[BenchTarget], "str | None"]  # None: present; else the reason it is not


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    factory: Factory
    precisions: tuple[str, ...]  # what it can run at all
    probe: Probe | None = None
    description: str = ""
    defaults: tuple[str, ...] | None = None  # run when --precision is not given (None: all of `precisions`)
    runs_onnx: bool = False  # runs the target's ONNX artifacts (by default only the precisions present)

    def unavailable(self, target: BenchTarget) -> str | None:
        return self.probe(target) if self.probe else None


BUILTIN_RUNTIMES = ("ort-cpu", "ort-cuda", "ort-trt", "trt")
_EXTRA: dict[str, RuntimeSpec] = {}


def register_runtime(
    name: str,
    factory: Factory,
    *,
    precisions: tuple[str, ...] = ("fp32",),
    probe: Probe | None = None,
    description: str = "",
    defaults: tuple[str, ...] | None = None,
) -> None:
    """Add (or replace) a runtime the bench can run, e.g. the full toolkit's torch eager model.

    `factory(target, precision, options)` returns an open `Backend` or raises `NotPresent`;
    `probe(target)` says cheaply why the runtime cannot run at all (None: it can).
    """
    if name in BUILTIN_RUNTIMES:
        raise ValueError(f"{name!r} is a built-in runtime")
    unknown = set(precisions) - set(ALL_PRECISIONS)
    if unknown:
        raise ValueError(f"unknown precisions {sorted(unknown)}; allowed: {', '.join(ALL_PRECISIONS)}")
    _EXTRA[name] = RuntimeSpec(
        name, factory, tuple(precisions), probe, description, None if defaults is None else tuple(defaults)
    )


def unregister_runtime(name: str) -> None:
    _EXTRA.pop(name, None)


# Runtimes the full toolkit registers; with the runtime alone they are listed as not present.
TOOLKIT_RUNTIMES = ("torch", "torch-compile")


def runtimes() -> dict[str, RuntimeSpec]:
    """Every known runtime, built-ins first, in the order the table shows them."""
    from ..plugins import load_runtimes

    load_runtimes()
    specs = {name: _builtin(name) for name in BUILTIN_RUNTIMES}
    for name in TOOLKIT_RUNTIMES:
        specs[name] = _EXTRA.get(name) or _toolkit_placeholder(name)
    specs.update(_EXTRA)
    return specs


def _toolkit_placeholder(name: str) -> RuntimeSpec:
    def factory(target: BenchTarget, precision: str, options: OpenOptions) -> Backend:
        raise NotPresent(_TOOLKIT_MISSING)

    return RuntimeSpec(name, factory, ("fp32",), probe=lambda target: _TOOLKIT_MISSING)


_TOOLKIT_MISSING = (
    "needs the full toolkit with torch (pip install invspread-edge); the runtime alone has none"
)


# --- the runtime's own backends ---------------------------------------------------------------------

_BUILTIN_PRECISIONS = {
    "ort-cpu": ONNX_PRECISIONS,
    "ort-cuda": ONNX_PRECISIONS,
    "ort-trt": ("fp32", "fp16", "int8"),  # TensorRT rejects the CPU artifact's uint8 zero-points
    "trt": ("fp32", "fp16", "int8"),
}
_DESCRIPTIONS = {
    "ort-cpu": "ONNX Runtime, CPU execution provider",
    "ort-cuda": "ONNX Runtime, CUDA execution provider",
    "ort-trt": "ONNX Runtime, TensorRT execution provider",
    "trt": "TensorRT (native, cuda-python)",
}


def _builtin(name: str) -> RuntimeSpec:
    def factory(target: BenchTarget, precision: str, options: OpenOptions) -> Backend:
        if precision not in target.artifacts:
            raise NotPresent(target.missing_artifact_reason(precision))
        return open_onnx_backend(name, target.artifacts[precision], precision, options)

    return RuntimeSpec(
        name=name,
        factory=factory,
        precisions=_BUILTIN_PRECISIONS[name],
        probe=lambda target: builtin_unavailable(name),
        description=_DESCRIPTIONS[name],
        runs_onnx=True,
    )


def builtin_unavailable(name: str) -> str | None:
    """Why a built-in backend cannot run on this machine (None when it looks usable); loads no model."""
    from ..backends.select import backend_status

    return backend_status().get(name)


def open_onnx_backend(name: str, model: Path, precision: str, options: OpenOptions) -> Backend:
    """Open one of the runtime's own backends on one ONNX file."""
    from ..embedder import open_backend

    return open_backend(
        model, backend=name, threads=options.threads, precision=precision, max_batch=options.max_batch
    )
