"""What machine a benchmark ran on: CPU, GPU, driver, CUDA, library versions, threads, Jetson power.

Read from files and package metadata only: nothing here imports torch (its version comes from
`importlib.metadata`; CUDA details from torch only when the process already loaded it), and every
probe that cannot read something leaves the field out instead of failing. `root` lets tests point
the readers at a fake file-system tree (a Jetson's /etc and /sys).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# Package names whose versions matter to a latency figure (first installed name wins).
PACKAGES = {
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime", "onnxruntime-directml", "onnxruntime-openvino"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-cu11"),
    "torch": ("torch",),
    "cuda-python": ("cuda-python", "cuda-bindings"),
    "numpy": ("numpy",),
    "pillow": ("pillow",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss"),
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ORT_NUM_THREADS")


def collect_environment(root: str | os.PathLike[str] = "/", run_tools: bool = True) -> dict[str, Any]:
    """The environment record of a benchmark report. `run_tools`: also ask nvidia-smi / nvpmodel."""
    root = Path(root)
    env: dict[str, Any] = {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": cpu_info(root),
        "memory_gb": memory_gb(root),
        "packages": package_versions(),
        "threads": thread_settings(),
    }
    if hasattr(os, "getloadavg") and root == Path("/"):
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]  # a busy machine makes noisy figures
    gpu = gpu_info(root, run_tools)
    if gpu:
        env["gpu"] = gpu
    jetson = jetson_info(root, run_tools)
    if jetson:
        env["jetson"] = jetson
    ort = onnxruntime_info()
    if ort:
        env["onnxruntime"] = ort
    if "torch" in sys.modules:  # never import torch here; describe it only when already loaded
        env["torch"] = _loaded_torch_info()
    return env


# --- CPU and memory --------------------------------------------------------------------------------


def cpu_info(root: Path = Path("/")) -> dict[str, Any]:
    text = _read(root / "proc/cpuinfo") or ""
    model = _first(r"^model name\s*:\s*(.+)$", text) or _first(r"^Hardware\s*:\s*(.+)$", text)
    if not model:
        model = _read(root / "proc/device-tree/model", strip_nul=True) or platform.processor() or None
    physical = set()  # distinct (socket, core) pairs: cores without their SMT siblings
    for block in text.split("\n\n"):
        core = _first(r"^core id\s*:\s*(\d+)$", block)
        if core is not None:
            physical.add((_first(r"^physical id\s*:\s*(\d+)$", block) or "0", core))
    info: dict[str, Any] = {"model": model, "logical_cores": os.cpu_count()}
    if physical:
        info["physical_cores"] = len(physical)
    if hasattr(os, "sched_getaffinity") and root == Path("/"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    governor = _read(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        info["governor"] = governor
    flags = _first(r"^flags\s*:\s*(.+)$", text)
    if flags:  # the instruction sets that decide which int8/fp16 kernels run
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")
        info["simd"] = [f for f in wanted if f in flags.split()]
    return info


def memory_gb(root: Path = Path("/")) -> float | None:
    kb = _first(r"^MemTotal:\s*(\d+)\s*kB", _read(root / "proc/meminfo") or "")
    return round(int(kb) / 1024**2, 1) if kb else None


# --- packages and threads --------------------------------------------------------------------------


def package_versions() -> dict[str, str]:
    """Installed versions from package metadata (no import of the packages themselves)."""
    found: dict[str, str] = {}
    for key, names in PACKAGES.items():
        for name in names:
            try:
                found[key] = metadata.version(name)
                if name != key:
                    found[key] += f" ({name})"
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def thread_settings() -> dict[str, Any]:
    threads: dict[str, Any] = {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}
    if hasattr(os, "sched_getaffinity"):
        threads["affinity_cores"] = len(os.sched_getaffinity(0))
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        threads["torch_intra_op"] = torch.get_num_threads()
        threads["torch_inter_op"] = torch.get_num_interop_threads()
    return threads


def onnxruntime_info() -> dict[str, Any] | None:
    """ONNX Runtime's providers: which of its backends this machine can run."""
    try:
        import onnxruntime as ort
    except Exception:  # absent, or a broken GPU build: report nothing rather than fail
        return None
    return {"version": ort.__version__, "providers": list(ort.get_available_providers())}


def _loaded_torch_info() -> dict[str, Any]:
    torch = sys.modules["torch"]
    info: dict[str, Any] = {"version": getattr(torch, "__version__", None)}
    version = getattr(torch, "version", None)
    if version is not None:
        info["cuda"] = getattr(version, "cuda", None)
    try:
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return info


# --- GPU --------------------------------------------------------------------------------------------


def gpu_info(root: Path = Path("/"), run_tools: bool = True) -> dict[str, Any]:
    """GPU name, driver and CUDA versions, from nvidia-smi, the driver's /proc file and CUDA's files."""
    info: dict[str, Any] = {}
    if run_tools and shutil.which("nvidia-smi"):
        query = _run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,compute_cap",
                "--format=csv,noheader",
            ]
        )
        if query:
            devices = []
            for line in query.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 2:
                    devices.append(
                        dict(zip(("name", "driver", "memory", "compute_capability"), parts, strict=False))
                    )
            if devices:
                info["devices"] = devices
                info["name"] = devices[0]["name"]
                info["driver"] = devices[0]["driver"]
        header = _run(["nvidia-smi"])
        cuda = _first(r"CUDA Version:\s*([\d.]+)", header or "")
        if cuda:
            info["cuda_driver_api"] = cuda
    if "driver" not in info:
        driver = _first(
            r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", _read(root / "proc/driver/nvidia/version") or ""
        )
        if driver:
            info["driver"] = driver
    toolkit = cuda_toolkit_version(root)
    if toolkit:
        info["cuda_toolkit"] = toolkit
    return info


def cuda_toolkit_version(root: Path = Path("/")) -> str | None:
    for candidate in ("usr/local/cuda/version.json", "usr/local/cuda/version.txt"):
        text = _read(root / candidate)
        if text:
            version = _first(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', text) or _first(
                r"CUDA Version\s+([\d.]+)", text
            )
            if version:
                return version
    return None


# --- Jetson -----------------------------------------------------------------------------------------


def jetson_info(root: Path = Path("/"), run_tools: bool = True) -> dict[str, Any]:
    """Power mode and clocks of a Jetson, where readable; {} on any other machine."""
    model = _read(root / "proc/device-tree/model", strip_nul=True)
    release = _read(root / "etc/nv_tegra_release")
    conf = _read(root / "etc/nvpmodel.conf")
    if not (release or conf or (model and "jetson" in model.lower())):
        return {}
    info: dict[str, Any] = {}
    if model:
        info["model"] = model
    if release:
        l4t = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
        info["l4t"] = f"{l4t.group(1)}.{l4t.group(2)}" if l4t else release.splitlines()[0]
    modes = power_modes(conf or "")
    if modes:
        info["power_modes"] = modes
    current = _current_power_mode(root, run_tools, modes)
    if current:
        info["power_mode"] = current
    clocks = jetson_clocks(root)
    if clocks:
        info["clocks"] = clocks
    return info


def power_modes(conf: str) -> dict[int, str]:
    """ID → name of every `< POWER_MODEL ID=n NAME=x >` in /etc/nvpmodel.conf."""
    return {
        int(m.group(1)): m.group(2) for m in re.finditer(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", conf)
    }


def _current_power_mode(root: Path, run_tools: bool, modes: dict[int, str]) -> str | None:
    if run_tools and root == Path("/") and shutil.which("nvpmodel"):
        text = _run(["nvpmodel", "-q"])
        name = _first(r"NV Power Mode:\s*(\S+)", text or "")
        if name:
            return name
    status = _read(root / "var/lib/nvpmodel/status")  # "pmode:0002 fmode:..."
    mode = _first(r"pmode:(\d+)", status or "")
    if mode is not None:
        return modes.get(int(mode), f"mode {int(mode)}")
    default = _first(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)", _read(root / "etc/nvpmodel.conf") or "")
    if default is not None:
        return f"{modes.get(int(default), 'mode ' + default)} (default; current mode not readable)"
    return None


def jetson_clocks(root: Path = Path("/")) -> dict[str, Any]:
    """Current and maximum CPU, GPU and memory clocks in MHz, where the files are readable."""
    clocks: dict[str, Any] = {}
    cpus = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
    cur = [_khz_to_mhz(_read(c / "scaling_cur_freq")) for c in cpus]
    top = [_khz_to_mhz(_read(c / "scaling_max_freq")) for c in cpus]
    if any(v is not None for v in cur):
        clocks["cpu_cur_mhz"] = [v for v in cur if v is not None]
    if any(v is not None for v in top):
        clocks["cpu_max_mhz"] = max(v for v in top if v is not None)
    for pattern in (
        "sys/devices/gpu.0/devfreq/*",
        "sys/devices/platform/*gpu*/devfreq/*",
        "sys/class/devfreq/*gpu*",
    ):
        for folder in sorted(root.glob(pattern)):
            cur_gpu = _hz_to_mhz(_read(folder / "cur_freq"))
            if cur_gpu is not None:
                clocks["gpu_cur_mhz"] = cur_gpu
                top_gpu = _hz_to_mhz(_read(folder / "max_freq"))
                if top_gpu is not None:
                    clocks["gpu_max_mhz"] = top_gpu
                break
        if "gpu_cur_mhz" in clocks:
            break
    emc = _hz_to_mhz(_read(root / "sys/kernel/debug/bpmp/debug/clk/emc/rate"))  # root only
    if emc is not None:
        clocks["emc_mhz"] = emc
    return clocks


# --- helpers ----------------------------------------------------------------------------------------


def _read(path: Path, strip_nul: bool = False) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if strip_nul:
        text = text.replace("\x00", "")
    return text.strip() or None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _first(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text, flags=re.MULTILINE)
    return match.group(1).strip() if match else None


def _khz_to_mhz(text: str | None) -> int | None:
    return int(text) // 1000 if text and text.isdigit() else None


def _hz_to_mhz(text: str | None) -> int | None:
    return int(text) // 1_000_000 if text and text.isdigit() else None


def busy_warning(env: dict[str, Any]) -> str | None:
    """A sentence when other work was running as the bench started (load > half the usable cores)."""
    load = env.get("load_average")
    cpu = env.get("cpu", {})
    usable = cpu.get("usable_cores") or cpu.get("logical_cores") or 1
    if not load or load[0] <= 0.5 * usable:
        return None
    return (
        f"{load[0]:.1f} on {usable} cores when the bench started: other work is running, so latencies "
        "are noisy (threaded runtimes suffer most); rerun on a quiet machine for figures to publish"
    )


def summary_lines(env: dict[str, Any]) -> list[str]:
    """A few human lines for the top of a report."""
    cpu = env.get("cpu", {})
    cores = (
        f"{cpu.get('usable_cores', cpu.get('logical_cores'))} usable of {cpu.get('logical_cores')} logical"
    )
    lines = [
        f"CPU: {cpu.get('model') or 'unknown'} ({cores} cores); {env.get('memory_gb')} GB RAM; {env.get('os')}"
    ]
    gpu = env.get("gpu") or {}
    if gpu.get("name") or gpu.get("driver"):
        parts = [gpu.get("name") or "NVIDIA GPU", f"driver {gpu.get('driver', '?')}"]
        if gpu.get("cuda_driver_api") or gpu.get("cuda_toolkit"):
            parts.append(f"CUDA {gpu.get('cuda_toolkit') or gpu.get('cuda_driver_api')}")
        lines.append("GPU: " + ", ".join(parts))
    else:
        lines.append("GPU: none found")
    jetson = env.get("jetson") or {}
    if jetson:
        clocks = jetson.get("clocks", {})
        lines.append(
            f"Jetson: {jetson.get('model', '?')}, L4T {jetson.get('l4t', '?')}, power mode "
            f"{jetson.get('power_mode', 'not readable')}, GPU clock {clocks.get('gpu_cur_mhz', '?')} MHz"
        )
    warning = busy_warning(env)
    if warning:
        lines.append(f"Load: {warning}")
    packages = env.get("packages", {})
    lines.append("Packages: " + ", ".join(f"{k} {v}" for k, v in packages.items()))
    return lines
