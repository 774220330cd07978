"""Serve a Triton model repository on this machine with PyTriton's `tritonserver` binary.

    make triton-server                                       # once: installs the binary into .cache/
    invedge deploy triton runs/shop/export --out repo --embedding python --device cpu
    .venv/bin/python scripts/tritonserver_local.py repo      # or: make triton-serve REPO=repo
    .venv/bin/python scripts/tritonserver_local.py repo --http-port 9000 -- --log-verbose=1

That binary (PyPI's nvidia-pytriton 0.7.0, Triton 2.51) has only the Python backend: a repository
for it needs `--embedding python --device cpu` (no onnxruntime_onnx or tensorrt_plan models, no
KIND_GPU instances; refused here in one line). A real Triton (NGC container, JetPack) needs none of this: `tritonserver
--model-repository REPO`. Run by hand, the binary fails one step at a time; this sets up what it needs:
- a backend folder whose Python backend holds the stub built for this Python version (the wheel ships
  one per version in `python_backend_stubs/3.X/`; the backend runs the one beside
  `libtriton_python.so`): copied once into `.cache/pytriton/invedge_backends/3.X/`;
- `LD_LIBRARY_PATH`: the wheel's own libraries (`nvidia_pytriton.libs`: libcudart, ...) and the
  libpython the stub embeds (the stub Python's own: another 3.X's does not do);
- `PATH`: `.cache/triton-python/bin` first. The stub's embedded interpreter takes its prefix (its
  site-packages) from the first `python3` on PATH and ignores PYTHONPATH; that venv (made by `make
  triton-server`) has numpy < 2 (the stub is built against numpy 1 and mis-reads numpy 2 arrays) and
  adds this checkout's `.venv` packages after its own (invspread_edge_runtime, onnxruntime, Pillow).
Then it replaces itself with the server (Ctrl-C stops it). tests/triton_testing.py starts its
servers through this script; `missing()` says why the server cannot run here.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / ".cache" / "pytriton" / "pytriton" / "tritonserver"
BINARY = DIST / "bin" / "tritonserver"
LIBS = ROOT / ".cache" / "pytriton" / "nvidia_pytriton.libs"
BACKENDS = ROOT / ".cache" / "pytriton" / "invedge_backends"  # one backend folder per Python version
STUB_PYTHON = ROOT / ".cache" / "triton-python" / "bin" / "python3"
STUB_PYTHON_READY = STUB_PYTHON.parents[1] / ".installed"  # written last by make triton-server
STUB_PTH = "invedge_venv.pth"  # in STUB_PYTHON's site-packages: adds .venv's site-packages after its own
INSTALL = "make triton-server"
BACKENDS_HERE = ("python", "ensemble")  # what this binary runs (config.pbtxt's backend or platform)
_BACKEND_LINE = re.compile(r'^\s*(?:backend|platform)\s*:\s*"([^"]*)"', re.MULTILINE)


class NotServable(RuntimeError):
    """The server cannot run here, or not this repository: the message says why and what to do."""


@functools.cache
def stub_python() -> dict[str, str]:
    """The stub Python's version ("3.11"), libpython folder and whether it has a shared libpython."""
    code = (
        "import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
        "'libdir': sysconfig.get_config_var('LIBDIR') or '', "
        "'shared': bool(sysconfig.get_config_var('Py_ENABLE_SHARED'))}))"
    )
    out = subprocess.run([str(STUB_PYTHON), "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def missing() -> str | None:
    """None when the server can run the Python backend here, else why not."""
    for needed in (BINARY, STUB_PYTHON_READY):
        if not needed.is_file():
            return f"{needed.relative_to(ROOT)} is missing"
    try:
        facts = stub_python()
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        return f"{STUB_PYTHON.relative_to(ROOT)} does not run ({exc}): remove .cache/triton-python"
    if not facts["shared"]:
        return (
            f"{STUB_PYTHON.parents[1].relative_to(ROOT)}'s Python has no shared libpython (the "
            "Python-backend stub embeds it): use a Python built with --enable-shared"
        )
    pth = next(STUB_PYTHON.parents[1].glob(f"lib/python3*/site-packages/{STUB_PTH}"), None)
    if pth is None:
        return f"{STUB_PTH} is missing from {STUB_PYTHON.parents[1].relative_to(ROOT)}"
    for line in pth.read_text().splitlines():
        if "addsitedir(" in line:
            site = line.split("addsitedir(", 1)[1].strip(")' \"")
            if not Path(site).is_dir():
                return f"{pth} points at {site}, which does not exist (the checkout moved): remove .cache/triton-python"
    return None


def backend_dir() -> Path:
    """A backends folder whose Python backend holds the stub built for the stub Python's version;
    made once (staged, then renamed into place: several servers may start at the same time)."""
    version = stub_python()["version"]
    stub = DIST / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise NotServable(f"PyTriton ships no Python-backend stub for Python {version} ({stub})")
    target = BACKENDS / version
    if (target / "python" / "triton_python_backend_stub").is_file():
        return target
    BACKENDS.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=BACKENDS))
    try:
        (staging / "python").mkdir()
        for item in (DIST / "backends" / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, staging / "python" / item.name)
        shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
        try:
            os.rename(staging, target)
        except OSError:  # another start made it first
            if not (target / "python" / "triton_python_backend_stub").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with what the server and its stubs need."""
    env = dict(os.environ if base is None else base)
    libdirs = [str(LIBS), stub_python()["libdir"], env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
    env["PATH"] = os.pathsep.join(p for p in (str(STUB_PYTHON.parent), env.get("PATH", "")) if p)
    return env


def unservable(repo: Path) -> list[str]:
    """`MODEL (WHAT)` for each model of `repo` this binary cannot load: one on a backend it does not
    have, or on GPU instances (it runs on the CPU here)."""
    found = []
    for config in sorted(repo.glob("*/config.pbtxt")):
        text = config.read_text(encoding="utf-8", errors="replace")
        needs = [b for b in _BACKEND_LINE.findall(text) if b not in BACKENDS_HERE]
        needs += ["KIND_GPU"] if "KIND_GPU" in text else []
        found += [f"{config.parent.name} ({needs[0]})"] if needs else []
    return found


def check_repository(repo: Path) -> None:
    if not repo.is_dir():
        raise NotServable(f"{repo} is not a folder. Pass the model repository `invedge deploy triton` wrote")
    if foreign := unservable(repo):
        raise NotServable(
            f"{', '.join(foreign)}: PyTriton's tritonserver has only the Python backend, on the CPU. Write the "
            "repository for it with: invedge deploy triton EXPORT --out REPO --embedding python "
            "--device cpu --overwrite (a real Triton serves the others)"
        )


def command(
    repo: Path,
    *,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    address: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The tritonserver command line serving `repo` (ports and address: Triton's defaults when None)."""
    args = [
        str(BINARY),
        f"--model-repository={Path(repo).absolute()}",
        f"--backend-directory={backend_dir()}",
    ]
    for flag, value in (("http-port", http_port), ("grpc-port", grpc_port), ("metrics-port", metrics_port)):
        if value is not None:
            args.append(f"--{flag}={value}")
    if address is not None:
        args += [f"--http-address={address}", f"--grpc-address={address}"]
    return [*args, *extra]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "repo", type=Path, help="the model repository (invedge deploy triton --embedding python --device cpu)"
    )
    p.add_argument("--http-port", type=int, help="default: Triton's 8000")
    p.add_argument("--grpc-port", type=int, help="default: Triton's 8001")
    p.add_argument("--metrics-port", type=int, help="default: Triton's 8002")
    p.add_argument(
        "--address", help="HTTP and gRPC address (default: Triton's 0.0.0.0); 127.0.0.1 for this machine only"
    )
    p.epilog = "After --: more tritonserver flags, passed on as they are (--log-verbose=1, ...)."
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = p.parse_args(argv[:cut]), argv[cut + 1 :]
    try:
        if reason := missing():
            raise NotServable(f"{reason}. Run {INSTALL}")
        check_repository(args.repo)
        argv_server = command(
            args.repo,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            address=args.address,
            extra=extra,
        )
        env = environment()
    except (NotServable, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv_server[0], argv_server, env)  # the server takes this process: signals reach it
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
