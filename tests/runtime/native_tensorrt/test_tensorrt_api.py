"""Our TensorRT code against the real Python API of each supported TensorRT version, without a GPU.

For each version, `make test-trt` makes an API-only install once (real_api/prepare.py: the real
bindings wheel from the package registry, a stub libnvinfer built with gcc; cached in the git-ignored
.cache/tensorrt-api/), then the checks in real_api/check_*.py run in their own Python process against
it. The default run uses that cache and never downloads: without it, these tests skip and say to run
`make test-trt`. What passes here: every
TensorRT attribute our engine builder, engine cache and TensorRT backend use exists in that
version, every call fits the real signatures, and the call sequence is as intended. What it does
not show: that an engine builds or runs (that needs a GPU: the `hardware` tests).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import REPO
from tiny import TRT_API as TRT_TESTS

CHECKS = ("check_build.py", "check_backend.py", "check_dla.py")


def _prepare_module():
    spec = importlib.util.spec_from_file_location("trt_prepare", TRT_TESTS / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


prepare = _prepare_module()

# Present in every supported version and used on every path: a sample the report must contain.
CORE = (
    "Builder.create_network",
    "Builder.build_serialized_network",
    "OnnxParser.parse_from_file",
    "IOptimizationProfile.set_shape",
    "IBuilderConfig.add_optimization_profile",
    "IBuilderConfig.set_memory_pool_limit",
    "IBuilderConfig.create_timing_cache",
    "IBuilderConfig.set_timing_cache",
    "MemoryPoolType.WORKSPACE",
    "Runtime.deserialize_cuda_engine",
    "ICudaEngine.create_execution_context",
    "ICudaEngine.get_tensor_profile_shape",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
)
# What a DLA build (--dla N) and the load of its engine use, in every supported version.
DLA = (
    "Builder.num_DLA_cores",
    "Builder.max_DLA_batch_size",
    "IBuilderConfig.default_device_type",
    "IBuilderConfig.DLA_core",
    "IBuilderConfig.can_run_on_DLA",
    "INetworkDefinition.num_layers",
    "INetworkDefinition.get_layer",
    "DeviceType.DLA",
    "BuilderFlag.GPU_FALLBACK",
    "Runtime.DLA_core",
    "Runtime.num_DLA_cores",
)
# cuda-python functions the backend's device timing uses (checked against the real signatures).
CUDA_EVENTS = (
    "cudaEventCreate",
    "cudaEventRecord",
    "cudaEventSynchronize",
    "cudaEventElapsedTime",
    "cudaEventDestroy",
)


@pytest.mark.parametrize("version", list(prepare.VERSIONS))
def test_our_tensorrt_code_fits_the_real_api(version: str, tmp_path: Path) -> None:
    try:
        install = prepare.prepare(version)
    except prepare.Unavailable as exc:
        pytest.skip(f"TensorRT {version} API checks skipped: {exc}")
    report = tmp_path / "api-used.json"
    env = install.env()
    env["INVEDGE_TRT_API_REPORT"] = str(report)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
    cmd += ["--rootdir", str(REPO), "--basetemp", str(tmp_path / "checks")]  # its own temporary folder
    proc = subprocess.run(
        [*cmd, *(str(TRT_TESTS / c) for c in CHECKS)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"TensorRT {version}: our code does not fit its real Python API:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}",
            pytrace=False,
        )
    used = json.loads(report.read_text())
    assert used["tensorrt"] == version
    assert set(CORE) <= set(used["used"]), sorted(set(CORE) - set(used["used"]))
    assert set(DLA) <= set(used["used"]), sorted(set(DLA) - set(used["used"]))
    assert set(CUDA_EVENTS) <= set(used["cuda_used"]), sorted(set(CUDA_EVENTS) - set(used["cuda_used"]))
    major = int(version.split(".")[0])
    if major == 10:  # weak typing still exists: strong typing is requested, the probe finds FP16
        assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in used["used"]
        assert "BuilderFlag.FP16" in used["used"]
        assert "BuilderFlag.INT8" in used["used"]  # a DLA build of the int8 graph (weakly typed on 10)
    else:  # always strongly typed: no creation flag, the probe finds no FP16
        assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" not in used["used"]
        assert used["probed_absent"] == ["BuilderFlag.FP16"]
    (install.root / "api-used.json").write_text(json.dumps(used, indent=1) + "\n")
    print(f"TensorRT {version} attributes our code uses ({len(used['used'])}): {', '.join(used['used'])}")
    print(f"  probed and absent: {used['probed_absent'] or 'none'}")
    print(f"  cuda-bindings {used['cuda_bindings']}: {', '.join(used['cuda_used'])}")
