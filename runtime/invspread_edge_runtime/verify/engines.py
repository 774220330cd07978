"""The probe check of an engine just built, before it is written, cached or used.

TensorRT (natively, or inside ONNX Runtime's TensorRT provider) builds its engine on the device and
may fuse, reorder and pick kernels that an INT8 or FP16 graph does not survive. So both builds run
the probe set beside the ONNX file (`probes.py`) through the new engine and judge it
(`backend.verify_backend`). `PROBE_CHECK` is that check, handed to the backends by whoever opens a
model (`embedder.open_backend`): the native build (`tensorrt.build`, through `backends.trt.plan_check`)
runs it before it writes the engine file, ONNX Runtime's provider (`backends.ort`) before the cache
slot's sidecar is written. A failing engine is never kept; an ONNX file without a probe set beside
it is built with a warning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import console
from ..backends.base import Backend
from ..metadata import ModelMeta
from ..tensorrt.build import PlanCheck
from .backend import require_pass, verify_backend
from .probes import MANIFEST, PROBE_DIR, find_probe_set, load_probe_set, probe_folder

# backend name → (what was built, what happened to it when it fails)
BUILT = {
    "trt": ("TensorRT engine", "the engine was not written"),
    "ort-trt": ("ONNX Runtime TensorRT engine", "its cache folder was emptied"),
}


def _warn_unchecked(onnx_path: str | os.PathLike[str], what: str) -> None:
    console.warn(
        f"no probe set beside {Path(onnx_path).name} ({PROBE_DIR}/{MANIFEST}): the {what} is not "
        "checked against FP32; re-export with 'invedge export' to get one"
    )


class ProbeCheck:
    """The `backends.base.EngineCheck` of this toolkit: the probe set beside the ONNX file."""

    def has_reference(self, onnx_path: Path, built: str) -> bool:
        if find_probe_set(onnx_path) is not None:
            return True
        _warn_unchecked(onnx_path, BUILT.get(built, ("engine", ""))[0])
        return False

    def __call__(self, backend: Backend, onnx_path: Path) -> dict[str, Any]:
        """The figures of the engine `backend` runs; VerifyFailed when it fails (after `has_reference`:
        without a probe set, `load_probe_set` says so in one line)."""
        what, kept = BUILT.get(backend.info.name, ("engine", ""))
        result = verify_backend(backend, load_probe_set(probe_folder(onnx_path).parent))
        require_pass(result, f"the {what} built from {Path(onnx_path).name}", kept)
        return result.to_dict()


PROBE_CHECK = ProbeCheck()


def probe_plan_check(onnx_path: str | os.PathLike[str], meta: ModelMeta) -> PlanCheck:
    """PROBE_CHECK as `tensorrt.build.build_engine` runs it: on the new plan, before it is written."""
    from ..backends.trt import plan_check

    return plan_check(PROBE_CHECK, onnx_path, meta)
