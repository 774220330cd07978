"""Fixtures of the per-version TensorRT API checks (check_*.py).

These modules run only in a subprocess started by tests/runtime/native_tensorrt/test_tensorrt_api.py (and
tests/runtime/test_verify.py), with PYTHONPATH and LD_LIBRARY_PATH pointing at one API-only TensorRT
install (prepare.py). Nothing here imports tensorrt at collection time, so the main test run only
loads this file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from engine_rig import Rig

REPORT_ENV = "INVEDGE_TRT_API_REPORT"
_LEDGER: dict[str, Any] = {"used": set(), "probed_absent": set(), "cuda": set()}


def _import_real() -> tuple[Any, Any]:
    try:
        import tensorrt
        from cuda.bindings import runtime as cudart
    except (ImportError, OSError) as exc:
        pytest.skip(f"run through ../test_tensorrt_api.py (needs an API-only TensorRT install): {exc}")
    return tensorrt, cudart


def pytest_report_header(config: Any) -> list[str]:
    try:
        import cuda.bindings
        import tensorrt
    except (ImportError, OSError):
        return []
    return [
        f"TensorRT {tensorrt.__version__} (real Python API, stub libraries: nothing can build or run), "
        f"cuda-bindings {cuda.bindings.__version__}"
    ]


@pytest.fixture
def trt_real() -> Any:
    return _import_real()[0]


@pytest.fixture
def api(trt_real: Any) -> Any:
    """The TrtApi ledger of this test; every call on its doubles is checked at the end of the test."""
    from trt_doubles import TrtApi

    ledger = TrtApi(trt_real)
    yield ledger
    ledger.verify()
    _LEDGER["used"] |= ledger.used
    _LEDGER["probed_absent"] |= ledger.absent


@pytest.fixture
def cudart(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The simulated cuda-python runtime, installed where our code imports it."""
    from trt_doubles import SimulatedCudart

    from invspread_edge_runtime.tensorrt import cuda

    sim = SimulatedCudart(_import_real()[1])
    monkeypatch.setattr(cuda, "import_cudart", lambda: sim)
    yield sim
    _LEDGER["cuda"] |= {name for name, _ in sim.calls}


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    try:
        import cuda.bindings
        import tensorrt

        version, cuda_version = tensorrt.__version__, cuda.bindings.__version__
    except (ImportError, OSError):
        return
    with open(path, "w") as fh:
        json.dump(
            {
                "tensorrt": version,
                "used": sorted(_LEDGER["used"]),
                "probed_absent": sorted(_LEDGER["probed_absent"]),
                "cuda_bindings": cuda_version,
                "cuda_used": sorted(_LEDGER["cuda"]),
            },
            fh,
            indent=1,
        )


@pytest.fixture
def rig(api: Any, cudart: Any, monkeypatch: pytest.MonkeyPatch) -> Rig:
    r = Rig(api, cudart)
    r.install(monkeypatch)
    return r


@pytest.fixture
def version_major(trt_real: Any) -> int:
    return int(trt_real.__version__.split(".")[0])
