"""Pick a backend and the model artifact that suits it.

`backend="auto"` tries, in order, the native TensorRT backend, ONNX Runtime's TensorRT provider,
its CUDA provider, then its CPU provider, keeping the first that starts; `backend.notes` says which
was chosen and why the faster ones were not.

Given an export folder (or a run folder holding `export/`), the artifact follows the backend:
- CPU: `int8-cpu` (uint8 activations: the layout ONNX Runtime's CPU kernels are fast on), else fp32;
  fp16 and the symmetric int8 model run slower than fp32 on a CPU.
- TensorRT (native or provider): `int8` (symmetric Q/DQ) > fp16 > fp32; never `int8-cpu`
  (TensorRT rejects non-zero zero-points).
- ONNX Runtime CUDA: fp16 > fp32 > int8 (its Q/DQ kernels mostly dequantize to float).
`precision=` overrides the preference.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import EngineError, InvedgeError, MissingDependency, ModelError
from ..metadata import PRECISIONS, ModelMeta, read_model_meta
from .base import Backend

BACKENDS = ("trt", "ort-trt", "ort-cuda", "ort-cpu")  # fastest first: the order of `auto`
PREFERENCE = {
    "ort-cpu": ("int8-cpu", "fp32", "fp16", "int8"),
    "ort-cuda": ("fp16", "fp32", "int8", "int8-cpu"),
    "ort-trt": ("int8", "fp16", "fp32"),
    "trt": ("int8", "fp16", "fp32"),
}


def find_artifacts(model: str | os.PathLike[str]) -> dict[str, tuple[Path, ModelMeta]]:
    """precision → (path, metadata) for one .onnx file, an export folder, or a run folder."""
    path = Path(model)
    if path.is_file():
        meta = read_model_meta(path)
        return {meta.precision: (path, meta)}
    if path.is_dir():
        folder = path / "export" if not list(path.glob("*.onnx")) and (path / "export").is_dir() else path
        found: dict[str, tuple[Path, ModelMeta]] = {}
        for onnx in sorted(folder.glob("*.onnx")):
            try:
                meta = read_model_meta(onnx)
            except ModelError:
                continue  # other ONNX files (the search graph dump, a user's model) are not ours
            found.setdefault(meta.precision, (onnx, meta))
        if not found:
            raise ModelError(
                f"no invspread-edge model (.onnx with our metadata) in {folder}",
                "Export one with 'invedge export RUN_DIR'",
            )
        return found
    raise ModelError(f"model not found: {path}", "Pass an exported .onnx file or an export folder")


def pick_artifact(
    artifacts: dict[str, tuple[Path, ModelMeta]], backend: str, precision: str | None = None
) -> tuple[Path, ModelMeta]:
    """The artifact `backend` should run (see the module docstring); ModelError when none fits."""
    if precision is not None:
        if precision not in PRECISIONS:
            raise ModelError(f"Invalid precision {precision!r}. Only {', '.join(PRECISIONS)} are supported.")
        if precision not in artifacts:
            raise ModelError(
                f"no {precision} artifact here (found: {', '.join(sorted(artifacts))})",
                "Export it (invedge export RUN --int8 / --fp16) or choose another --precision",
            )
        order: tuple[str, ...] = (precision,)
    else:
        order = PREFERENCE[backend]
    for wanted in order:
        if wanted in artifacts:
            if backend in ("trt", "ort-trt") and wanted == "int8-cpu":
                break
            return artifacts[wanted]
    if set(artifacts) == {"int8-cpu"} or (precision == "int8-cpu" and backend in ("trt", "ort-trt")):
        raise ModelError(
            "the int8-cpu model (uint8 activations) cannot run on TensorRT",
            "Use model.int8.onnx (symmetric INT8), fp16 or fp32 for TensorRT, or --backend ort-cpu",
        )
    raise ModelError(f"no artifact for {backend} among {', '.join(sorted(artifacts))}")


def backend_status() -> dict[str, str | None]:
    """backend → None when it looks usable here, else why not (cheap: nothing is loaded)."""
    from .ort import available_providers

    providers = available_providers()
    status: dict[str, str | None] = {}
    has_trt = importlib.util.find_spec("tensorrt") is not None
    status["trt"] = None if has_trt else "the tensorrt Python package is not installed"
    for name, provider in (
        ("ort-trt", "TensorrtExecutionProvider"),
        ("ort-cuda", "CUDAExecutionProvider"),
        ("ort-cpu", "CPUExecutionProvider"),
    ):
        if not providers:
            status[name] = "onnxruntime is not installed"
        else:
            status[name] = None if provider in providers else f"this onnxruntime has no {provider}"
    return status


def open_backend(
    model: str | os.PathLike[str],
    backend: str = "auto",
    threads: int = 0,
    precision: str | None = None,
    max_batch: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device_id: int = 0,
) -> Backend:
    """Open `model` (file or export folder) on `backend` ("auto" or one of BACKENDS).

    The returned backend has `notes`: a list of lines saying what was chosen and why.
    """
    if backend != "auto" and backend not in BACKENDS:
        raise EngineError(f"Invalid backend {backend!r}. Only auto, {', '.join(BACKENDS)} are supported.")
    artifacts = find_artifacts(model)
    status = backend_status()
    candidates = BACKENDS if backend == "auto" else (backend,)
    notes: list[str] = []
    for name in candidates:
        if backend == "auto" and status[name] is not None:
            notes.append(f"{name}: skipped ({status[name]})")
            continue
        try:
            path, meta = pick_artifact(artifacts, name, precision)
            opened = _open(name, path, meta, threads, max_batch, cache_dir, device_id)
        except (InvedgeError, RuntimeError, OSError) as exc:
            if backend != "auto" or (isinstance(exc, ModelError) and name == "ort-cpu"):
                raise
            notes.append(f"{name}: skipped ({exc})")
            continue
        picked = "auto-selected" if backend == "auto" else "as asked"
        notes.append(f"{name}: {path.name} ({meta.precision}) on {opened.info.device}, {picked}")
        opened.notes = notes  # type: ignore[attr-defined]
        if getattr(opened, "meta", None) is None:
            opened.meta = meta  # type: ignore[attr-defined]  # the Embedder preprocesses from it
        return opened
    raise EngineError("no backend could run this model:\n  " + "\n  ".join(notes))


def _open(
    name: str,
    path: Path,
    meta: ModelMeta,
    threads: int,
    max_batch: int | None,
    cache_dir: str | os.PathLike[str] | None,
    device_id: int,
) -> Backend:
    if name == "trt":
        try:
            from .trt import TensorRTBackend  # the native backend; needs tensorrt + cuda-python
        except ImportError as exc:
            raise MissingDependency(
                "tensorrt",
                "The native TensorRT backend",
                "install JetPack's or NVIDIA's TensorRT Python bindings",
            ) from exc
        kwargs = {"precision": meta.precision, "max_batch": max_batch or 64}
        if cache_dir is not None:
            kwargs["cache_dir"] = cache_dir
        return TensorRTBackend(path, **kwargs)
    from .ort import OrtBackend

    return OrtBackend(
        path, name, threads=threads, device_id=device_id, max_batch=max_batch, cache_dir=cache_dir, meta=meta
    )
