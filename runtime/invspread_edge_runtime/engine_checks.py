"""The probe check of an engine just built, before it is written, cached or used.

TensorRT (natively, or inside ONNX Runtime's TensorRT provider) builds its engine on the device and
may fuse, reorder and pick kernels that an INT8 or FP16 graph does not survive. So both builds run
the probe set beside the ONNX file (`probes.py`) through the new engine and judge it
(`verify.verify_backend`): the native build (`tensorrt.build`) before it writes the engine file,
ONNX Runtime's provider (`backends.ort`) before the cache slot's sidecar is written. A failing
engine is never kept; an ONNX file without a probe set beside it is built with a warning.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from . import console
from .backends.base import Backend
from .errors import AccuracyError
from .metadata import ModelMeta
from .probes import MANIFEST, PROBE_DIR, find_probe_set, load_probe_set
from .verify import VerifyFailed, VerifyResult, require_pass, verify_backend


def verify_new_engine(
    backend: Backend, onnx_path: str | os.PathLike[str], what: str, kept: str
) -> VerifyResult | None:
    """Check a freshly built engine against the probe set beside `onnx_path`.

    None (with a warning) when there is no probe set there: an ONNX file exported before probe
    sets existed, or one copied without its folder. Raises VerifyFailed when the engine fails.
    """
    folder = find_probe_set(onnx_path)
    if folder is None:
        _warn_unchecked(onnx_path, what)
        return None
    probes = load_probe_set(folder.parent)
    result = verify_backend(backend, probes)
    require_pass(result, f"the {what} built from {Path(onnx_path).name}", kept)
    return result


def _warn_unchecked(onnx_path: str | os.PathLike[str], what: str) -> None:
    console.warn(
        f"no probe set beside {Path(onnx_path).name} ({PROBE_DIR}/{MANIFEST}): the {what} is not "
        "checked against FP32; re-export with 'invedge export' to get one"
    )


# --- the native TensorRT build --------------------------------------------------------------------


def verify_plan(trt: Any, plan: bytes, onnx_path: str | os.PathLike[str], meta: ModelMeta) -> dict | None:
    """Run the serialized engine `plan` on the probes before it is written.

    Returns the figures for the engine's sidecar, None when there is no probe set; VerifyFailed
    when the engine fails (the caller writes nothing then).
    """
    if find_probe_set(onnx_path) is None:
        _warn_unchecked(onnx_path, "TensorRT engine")
        return None
    from .backends.trt import TensorRTBackend
    from .tensorrt import api
    from .tensorrt.load import LoadedEngine

    runtime = trt.Runtime(api.make_logger(trt))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise AccuracyError(f"TensorRT could not deserialise the engine it just built from {onnx_path}")
    backend = TensorRTBackend(onnx_path, loaded=LoadedEngine(engine, runtime, None, "built"), meta=meta)
    try:
        result = verify_new_engine(backend, onnx_path, "TensorRT engine", "the engine was not written")
    finally:
        backend.close()
    return None if result is None else result.to_dict()


# --- ONNX Runtime's TensorRT provider -------------------------------------------------------------


def cache_listing(cache_dir: str | os.PathLike[str] | None) -> dict[str, int]:
    """name → mtime_ns of the files in ONNX Runtime's TensorRT cache folder (before a session)."""
    if cache_dir is None or not Path(cache_dir).is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in Path(cache_dir).iterdir() if p.is_file()}


def verify_ort_trt_session(
    backend: Backend,
    onnx_path: str | os.PathLike[str],
    cache_dir: Path,
    before: dict[str, int],
) -> VerifyResult | None:
    """ONNX Runtime's TensorRT provider builds its engine for the session (at creation, or at the
    first run, which the probes are) into `cache_dir`: the cache slot of this model and key
    (`backends.ort_cache`), whose sidecar is written only after this check passed. On a failure
    the slot is emptied, so no engine of it is ever reused, and VerifyFailed is raised."""
    try:
        return verify_new_engine(
            backend, onnx_path, "ONNX Runtime TensorRT engine", "its cache folder was emptied"
        )
    except VerifyFailed:
        backend.close()
        written = sorted(n for n, t in cache_listing(cache_dir).items() if before.get(n) != t)
        for path in Path(cache_dir).iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if written:
            console.info(f"removed the engine files of the failed check: {', '.join(written)}")
        raise
