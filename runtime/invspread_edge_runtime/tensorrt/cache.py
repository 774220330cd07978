"""What makes a TensorRT engine reusable: its cache key and the JSON sidecar written beside it.

Engines are not portable: one built from another ONNX file, by another TensorRT version, or for
another GPU must not be loaded. Every engine `X.engine` has a sidecar `X.engine.json` holding the
key it was built for and the engine's own sha256 (a torn engine/sidecar pair is detected too).
No TensorRT here: the key logic is plain data, tested everywhere.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import EngineError, InvedgeError
from ..files import atomic_write_json, read_json, user_cache_dir

SIDECAR_FORMAT = "invspread-edge-engine/1"
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CACHE_ENV = "INVEDGE_ENGINE_CACHE"
# An engine's build settings when none are given (the CLI's --min-batch/--max-batch/--workspace-mb).
DEFAULT_MIN_BATCH = 1
DEFAULT_MAX_BATCH = 64
DEFAULT_WORKSPACE_MB = 1024
TIMING_CACHE_NAME = "timing.cache"  # beside the engines an explicit build writes


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile's batch range for input `images`: (min, opt, max)."""

    min: int = 1
    opt: int = 32
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise InvedgeError(
                f"invalid batch profile min={self.min} opt={self.opt} max={self.max}",
                "It needs 1 <= --min-batch <= --opt-batch <= --max-batch",
            )

    @classmethod
    def of(cls, min_batch: int, opt_batch: int | None, max_batch: int) -> BatchProfile:
        """The profile of the CLI's --min-batch/--opt-batch/--max-batch: opt defaults to max."""
        return cls(min_batch, max_batch if opt_batch is None else opt_batch, max_batch)

    def __str__(self) -> str:
        return f"{self.min}/{self.opt}/{self.max}"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two equal keys mean the engine can be reused."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    dla_core: int | None = None  # the DLA core it runs on (GPU fallback for the rest); None: the GPU

    @property
    def profile(self) -> BatchProfile:
        return BatchProfile(self.min_batch, self.opt_batch, self.max_batch)

    @property
    def device(self) -> str:
        """Where the engine runs: 'GPU' or 'DLA core N'."""
        return device_name(self.dla_core)

    def mismatches(self, other: EngineKey) -> list[str]:
        """Why an engine built for `other` cannot serve `self`, one reason per line ([] = reusable)."""
        reasons = engine_mismatches(self, other)
        if other.profile != self.profile:
            reasons.append(f"built for batch profile {other.profile}, {self.profile} wanted")
        if other.dla_core != self.dla_core:
            reasons.append(f"built for {other.device}, {self.device} wanted")
        return reasons


def device_name(dla_core: int | None) -> str:
    """Where an engine for `dla_core` runs, as the mismatch reasons and the CLI name it."""
    return "GPU" if dla_core is None else f"DLA core {dla_core}"


def engine_mismatches(here: Any, other: Any) -> list[str]:
    """The reasons an engine built for key `other` cannot serve key `here` that hold for every
    TensorRT engine, native or ONNX Runtime's (`backends/ort_cache.OrtTrtKey`): another ONNX file,
    TensorRT version, GPU or precision. Each key type adds its own (batch profile, provider options)."""
    reasons = []
    if other.onnx_sha256 != here.onnx_sha256:
        reasons.append(
            f"built from another ONNX file (sha256 {other.onnx_sha256[:12]}…, this one {here.onnx_sha256[:12]}…)"
        )
    if other.tensorrt_version != here.tensorrt_version:
        reasons.append(
            f"built with TensorRT {other.tensorrt_version}, this is TensorRT {here.tensorrt_version}"
        )
    if (other.gpu_name, other.compute_capability) != (here.gpu_name, here.compute_capability):
        reasons.append(
            f"built for {other.gpu_name} (sm {other.compute_capability}), "
            f"this GPU is {here.gpu_name} (sm {here.compute_capability})"
        )
    if other.precision != here.precision:
        reasons.append(f"built for precision {other.precision}, {here.precision} wanted")
    return reasons


@dataclass(frozen=True)
class EngineInfo:
    """An engine on disk and what it was built for (the sidecar's content)."""

    engine_path: Path
    key: EngineKey
    engine_sha256: str
    engine_bytes: int
    input_name: str = "images"
    output_name: str = "embeddings"
    input_shape: tuple[int, int, int] = (3, 0, 0)  # C, H, W
    embedding_dim: int = 0
    checkpoint_sha256: str = ""
    onnx_path: str = ""
    workspace_mb: int = 0
    build_seconds: float = 0.0
    built_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.engine_path)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"format": SIDECAR_FORMAT}
        for f in fields(self):
            if f.name == "engine_path":
                continue
            value = getattr(self, f.name)
            doc[f.name] = (
                _key_json(value) if f.name == "key" else list(value) if f.name == "input_shape" else value
            )
        return doc

    @classmethod
    def from_json(cls, doc: Any, engine_path: Path) -> EngineInfo:
        if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
            raise EngineError(f"{sidecar_path(engine_path)} is not an invspread-edge engine sidecar")
        try:
            kwargs = {f.name: doc[f.name] for f in fields(cls) if f.name in doc and f.name != "engine_path"}
            kwargs["key"] = EngineKey(**doc["key"])
            kwargs["input_shape"] = tuple(int(v) for v in doc.get("input_shape", (3, 0, 0)))
            return cls(engine_path=Path(engine_path), **kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"{sidecar_path(engine_path)} is damaged ({exc!r})") from exc


def _key_json(key: EngineKey) -> dict[str, Any]:
    """The key as the sidecar holds it; a GPU engine's has no `dla_core`, so runtimes older than
    DLA builds still read GPU sidecars (they refuse unknown key fields)."""
    doc = asdict(key)
    if key.dla_core is None:
        del doc["dla_core"]
    return doc


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def write_sidecar(info: EngineInfo) -> Path:
    atomic_write_json(info.sidecar_path, info.to_json())
    return info.sidecar_path


def read_sidecar(engine_path: str | os.PathLike[str]) -> EngineInfo | None:
    """The sidecar of `engine_path`, None if it has none; EngineError if it is damaged."""
    path = sidecar_path(engine_path)
    if not path.exists():
        return None
    try:
        doc = read_json(path, "engine sidecar")
    except InvedgeError as exc:
        raise EngineError(exc.message) from exc
    return EngineInfo.from_json(doc, Path(engine_path))


def default_cache_dir() -> Path:
    """$INVEDGE_ENGINE_CACHE, else ~/.cache/invspread-edge/engines (XDG_CACHE_HOME respected)."""
    if env := os.environ.get(DEFAULT_CACHE_ENV):
        return Path(env).expanduser()
    return user_cache_dir("engines")


def cached_engine_path(
    cache_dir: str | os.PathLike[str], onnx_path: str | os.PathLike[str], key: EngineKey
) -> Path:
    """One slot per (model file, ONNX content, precision, profile, GPU or DLA core); a TensorRT or GPU
    change overwrites the slot (a device has one GPU and one TensorRT at a time)."""
    stem = Path(onnx_path).name.removesuffix(".onnx")
    p = key.profile
    dla = "" if key.dla_core is None else f"-dla{key.dla_core}"
    name = f"{stem}-{key.onnx_sha256[:12]}-{key.precision}-b{p.min}-{p.opt}-{p.max}{dla}.engine"
    return Path(cache_dir) / name


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InvedgeError(
            f"invalid precision {precision!r}. Only {', '.join(PRECISIONS)} are supported",
            "Precision lives in the ONNX file: build from model.onnx, model.fp16.onnx or model.int8.onnx",
        )
    return precision
