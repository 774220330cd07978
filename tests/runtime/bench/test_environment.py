"""The benchmark's environment record: real on this machine, and a Jetson's files in a fake tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from invspread_edge_runtime.bench.environment import (
    collect_environment,
    cpu_info,
    gpu_info,
    jetson_info,
    package_versions,
    power_modes,
    summary_lines,
)

NVPMODEL_CONF = """
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=30W >
< PM_CONFIG DEFAULT=2 >
"""

CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 62.50
CPU part\t: 0xd42

processor\t: 1
BogoMIPS\t: 62.50
CPU part\t: 0xd42
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_jetson(root: Path, with_status: bool = True) -> Path:
    write(root, "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
    write(root, "proc/cpuinfo", CPUINFO_ARM)
    write(root, "proc/meminfo", "MemTotal:       32000000 kB\n")
    write(root, "etc/nv_tegra_release", "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    write(root, "etc/nvpmodel.conf", NVPMODEL_CONF)
    if with_status:
        write(root, "var/lib/nvpmodel/status", "pmode:0001 fmode:quiet\n")
    for cpu, khz in ((0, 1_728_000), (1, 2_201_600)):
        write(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", f"{khz}\n")
        write(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_max_freq", "2201600\n")
    write(root, "sys/devices/platform/17000000.gpu/devfreq/17000000.gpu/cur_freq", "1300500000\n")
    write(root, "sys/devices/platform/17000000.gpu/devfreq/17000000.gpu/max_freq", "1300500000\n")
    write(
        root,
        "proc/driver/nvidia/version",
        "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  540.4.0  Release Build\n",
    )
    write(
        root, "usr/local/cuda/version.json", json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"}})
    )
    return root


def test_jetson_power_mode_and_clocks(tmp_path):
    info = jetson_info(fake_jetson(tmp_path), run_tools=False)
    assert info["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert info["l4t"] == "36.4.3"
    assert info["power_modes"] == {0: "MAXN", 1: "15W", 2: "30W"}
    assert info["power_mode"] == "15W"
    clocks = info["clocks"]
    assert clocks["cpu_cur_mhz"] == [1728, 2201] and clocks["cpu_max_mhz"] == 2201
    assert clocks["gpu_cur_mhz"] == 1300 and clocks["gpu_max_mhz"] == 1300


def test_jetson_without_status_reports_default_mode(tmp_path):
    info = jetson_info(fake_jetson(tmp_path, with_status=False), run_tools=False)
    assert info["power_mode"].startswith("30W (default")


def test_jetson_cpu_gpu_and_summary(tmp_path):
    root = fake_jetson(tmp_path)
    cpu = cpu_info(root)
    assert cpu["model"] == "NVIDIA Jetson AGX Orin Developer Kit"  # arm cpuinfo has no model name
    gpu = gpu_info(root, run_tools=False)
    assert gpu == {"driver": "540.4.0", "cuda_toolkit": "12.6.68"}
    env = collect_environment(root, run_tools=False)
    assert env["memory_gb"] == round(32_000_000 / 1024**2, 1)
    lines = "\n".join(summary_lines(env))
    assert "Jetson AGX Orin" in lines and "power mode 15W" in lines and "driver 540.4.0" in lines


def test_not_a_jetson(tmp_path):
    write(tmp_path, "proc/cpuinfo", "processor\t: 0\nmodel name\t: Some CPU\ncore id\t: 0\n")
    assert jetson_info(tmp_path, run_tools=False) == {}
    assert gpu_info(tmp_path, run_tools=False) == {}
    assert power_modes("nothing here") == {}


def test_this_machine():
    env = collect_environment()
    assert env["cpu"]["usable_cores"] <= env["cpu"]["logical_cores"] and env["cpu"]["model"]
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "numpy" in env["packages"] and "onnxruntime" in env["packages"]
    assert env["threads"]["affinity_cores"] == env["cpu"]["usable_cores"]  # the report's two places agree
    json.dumps(env)  # the report writes it as JSON
    assert any(line.startswith("CPU:") for line in summary_lines(env))
    assert len(env["load_average"]) == 3


def test_busy_machine_is_flagged():
    env = {"cpu": {"usable_cores": 2}, "load_average": [4.5, 3.0, 1.0], "packages": {}}
    assert any("noisy" in line for line in summary_lines(env))
    env["load_average"] = [0.2, 0.1, 0.1]
    assert not any("noisy" in line for line in summary_lines(env))


def test_torch_version_read_without_importing_torch():
    code = (
        "import sys, json\n"
        "from invspread_edge_runtime.bench.environment import collect_environment\n"
        "env = collect_environment()\n"
        "print(json.dumps({'torch_loaded': 'torch' in sys.modules, 'packages': env['packages']}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch_loaded"] is False
    assert result["packages"].get("torch") == package_versions().get("torch")
