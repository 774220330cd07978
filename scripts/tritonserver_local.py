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
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / ".cache" / "pytriton" / "pytriton" / "tritonserver"
BINARY = DIST / "bin" / "tritonserver"
LIBS = ROOT / ".cache" / "pytriton" / "nvidia_pytriton.libs"
BACKENDS = ROOT / ".cache" / "pytriton" / "invedge_backends"  # one backend folder per Python version
STUB_PYTHON = ROOT / ".cache" / "triton-python" / "bin" / "python3"
STUB_PYTHON_READY = STUB_PYTHON.parents[1] / ".installed"  # written last by make triton-server
STUB_PTH = "invedge_venv.pth"  # in STUB_PYTHON's site-packages: adds .venv's site-packages after its own
STUB = "triton_python_backend_stub"
INSTALL = "make triton-server"
STUB_PYTHON_TIMEOUT_S = 30
STAGING_MAX_AGE_S = 60.0  # a staging folder older than this was left by a start that died
BACKENDS_HERE = {"python"}  # what this binary runs (config.pbtxt's backend), besides ensembles
PLATFORMS_HERE = {"ensemble"}
# the backend Triton infers from a version folder's file when config.pbtxt names none
MODEL_FILES = {
    "model.py": "python",
    "model.onnx": "onnxruntime",
    "model.plan": "tensorrt",
    "model.pt": "pytorch",
    "model.savedmodel": "tensorflow",
    "model.graphdef": "tensorflow",
}
FORMAT_PARAMETER = "invedge.format"  # every model `invedge deploy triton` writes carries it
DEPLOY = (
    "write the repository for this binary with: invedge deploy triton EXPORT --out REPO --embedding python "
    "--device cpu --overwrite (a real Triton serves these as they are)"
)
FOREIGN = "move it out of the repository (this binary has only the Python backend)"
BROKEN = "fix its config.pbtxt, or move the model out of the repository"


class NotServable(RuntimeError):
    """The server cannot run here, or not this repository: the message says why and what to do."""


@functools.cache
def stub_python() -> dict[str, str]:
    """The stub Python's version ("3.11"), libpython folder and whether it has a shared libpython;
    NotServable when it does not answer."""
    code = (
        "import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
        "'libdir': sysconfig.get_config_var('LIBDIR') or '', "
        "'shared': bool(sysconfig.get_config_var('Py_ENABLE_SHARED'))}))"
    )
    where = STUB_PYTHON.relative_to(ROOT) if STUB_PYTHON.is_relative_to(ROOT) else STUB_PYTHON
    try:
        out = subprocess.run(
            [str(STUB_PYTHON), "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=STUB_PYTHON_TIMEOUT_S,
        ).stdout
        return json.loads(out)
    except subprocess.TimeoutExpired:
        raise NotServable(
            f"{where} did not answer in {STUB_PYTHON_TIMEOUT_S} s: remove .cache/triton-python and run {INSTALL}"
        ) from None
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        said = exc.stderr.strip().splitlines() if isinstance(exc, subprocess.CalledProcessError) else []
        reason = said[-1] if said else str(exc)
        raise NotServable(
            f"{where} does not run ({reason}): remove .cache/triton-python and run {INSTALL}"
        ) from None


def stub_for(version: str) -> Path:
    """The Python-backend stub PyTriton ships for Python `version`."""
    return DIST / "python_backend_stubs" / version / STUB


def missing() -> str | None:
    """None when the server can run the Python backend here, else why not and what to do (one line)."""
    for needed in (BINARY, STUB_PYTHON_READY):
        if not needed.is_file():
            return f"{needed.relative_to(ROOT)} is missing. Run {INSTALL}"
    try:
        facts = stub_python()
    except NotServable as exc:
        return str(exc)
    if not facts["shared"]:
        return (
            f"{STUB_PYTHON.parents[1].relative_to(ROOT)}'s Python has no shared libpython (the "
            "Python-backend stub embeds it): use a Python built with --enable-shared"
        )
    if not stub_for(facts["version"]).is_file():
        shipped = sorted(p.parent.name for p in DIST.glob(f"python_backend_stubs/*/{STUB}"))
        return (
            f"PyTriton ships no Python-backend stub for Python {facts['version']} (only {', '.join(shipped) or 'none'}): "
            f"remove .cache/triton-python and make it with one of those (its venv takes .venv's base Python)"
        )
    pth = next(STUB_PYTHON.parents[1].glob(f"lib/python3*/site-packages/{STUB_PTH}"), None)
    if pth is None:
        return f"{STUB_PTH} is missing from {STUB_PYTHON.parents[1].relative_to(ROOT)}: remove .cache/triton-python and run {INSTALL}"
    for line in pth.read_text().splitlines():
        if "addsitedir(" in line:
            site = line.split("addsitedir(", 1)[1].strip(")' \"")
            if not Path(site).is_dir():
                return (
                    f"{pth} points at {site}, which does not exist (the checkout moved): "
                    f"remove .cache/triton-python and run {INSTALL}"
                )
    return None


def backend_dir() -> Path:
    """A backends folder whose Python backend holds the stub built for the stub Python's version;
    made once (staged, then renamed into place: several servers may start at the same time)."""
    version = stub_python()["version"]
    stub = stub_for(version)
    if not stub.is_file():
        raise NotServable(f"PyTriton ships no Python-backend stub for Python {version} ({stub})")
    target = BACKENDS / version
    if (target / "python" / STUB).is_file():
        return target
    if target.exists():  # made whole by a rename, so this one was changed by hand
        raise NotServable(
            f"{target} has no python/{STUB}: remove {target} (it is made again at the next start)"
        )
    BACKENDS.mkdir(parents=True, exist_ok=True)
    _clear_staging(version)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=BACKENDS))
    try:
        (staging / "python").mkdir()
        for item in (DIST / "backends" / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, staging / "python" / item.name)
        shutil.copy2(stub, staging / "python" / STUB)
        try:
            os.rename(staging, target)
        except OSError:  # another start made it first
            if not (target / "python" / STUB).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _clear_staging(version: str) -> None:
    """Remove the staging folders of starts that died (older than STAGING_MAX_AGE_S: a live start
    copies in well under a second)."""
    for leftover in BACKENDS.glob(f".{version}.*"):
        try:
            if time.time() - leftover.stat().st_mtime > STAGING_MAX_AGE_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:  # removed by another start meanwhile
            continue


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with what the server and its stubs need."""
    env = dict(os.environ if base is None else base)
    libdirs = [str(LIBS), stub_python()["libdir"], env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
    env["PATH"] = os.pathsep.join(p for p in (str(STUB_PYTHON.parent), env.get("PATH", "")) if p)
    return env


@dataclass(frozen=True)
class Problem:
    """Why this binary cannot load one model of the repository: `what` ("onnxruntime_onnx",
    "KIND_GPU", "config.pbtxt does not parse: ..."), and `fix`: what to do about it."""

    model: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.model} ({self.what})"


def _protobuf() -> tuple[Any, Any]:
    """protobuf's text_format and Triton's own ModelConfig protobuf module (tritonclient ships it)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise NotServable(f"tritonclient cannot be imported ({exc}): run make install") from None
    return text_format, model_config_pb2


def _model_config(path: Path) -> tuple[Any | None, str | None]:
    """config.pbtxt parsed as Triton parses it (its ModelConfig message), or None and why it does not parse."""
    text_format, model_config_pb2 = _protobuf()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        return text_format.Parse(text, model_config_pb2.ModelConfig()), None
    except (OSError, text_format.ParseError) as exc:
        return None, " ".join(str(exc).split())


def _inferred_backend(folder: Path) -> str | None:
    """The backend Triton infers from a version folder's model file, None when there is none."""
    for version in sorted(v for v in folder.iterdir() if v.is_dir() and v.name.isdigit()):
        for name, backend in MODEL_FILES.items():
            if (version / name).exists():
                return backend
    return None


def _model_problem(folder: Path, config: Any | None) -> str | None:
    """What in one model (its parsed config, None when it has none) this binary cannot run, if anything:
    its backend or platform (when the config names none, the one its model file implies), or GPU instances."""
    _, model_config_pb2 = _protobuf()
    runner = (config.platform or config.backend) if config is not None else ""
    runner = runner or _inferred_backend(folder) or "no backend, platform or model file"
    if runner not in BACKENDS_HERE | PLATFORMS_HERE:
        return runner
    gpu = model_config_pb2.ModelInstanceGroup.KIND_GPU
    if config is not None and any(group.kind == gpu for group in config.instance_group):
        return "KIND_GPU"
    return None


def _models(repo: Path) -> dict[str, Path]:
    """name → folder of each model in `repo`: a folder with config.pbtxt or a version folder's model file."""
    found = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (folder / "config.pbtxt").is_file() or _inferred_backend(folder) is not None:
            found[folder.name] = folder
    return found


def unservable(repo: Path, load: Iterable[str] | None = None) -> list[Problem]:
    """The models of `repo` this binary cannot load: on a backend it does not have, on GPU instances (it
    runs on the CPU here), or whose config.pbtxt does not parse. `load`: only these models (and the
    models their ensembles call), as with --model-control-mode=explicit; None: every model."""
    models = _models(repo)
    todo, seen, found = list(models if load is None else load), set(), []
    while todo:
        name = todo.pop(0)
        if name in seen or name not in models:
            continue  # a name the repository lacks: the server says so itself
        seen.add(name)
        folder, config = models[name], None
        if (folder / "config.pbtxt").is_file():
            config, error = _model_config(folder / "config.pbtxt")
            if config is None:
                found.append(Problem(name, f"config.pbtxt does not parse: {error}", BROKEN))
                continue
            todo += [step.model_name for step in config.ensemble_scheduling.step]
        if what := _model_problem(folder, config):
            ours = config is not None and FORMAT_PARAMETER in config.parameters
            found.append(Problem(name, what, DEPLOY if ours else FOREIGN))
    return found


def check_repository(repo: Path, load: Iterable[str] | None = None) -> None:
    """NotServable naming each model of `repo` (or of those in `load`) this binary cannot load."""
    if not repo.is_dir():
        raise NotServable(f"{repo} is not a folder. Pass the model repository `invedge deploy triton` wrote")
    problems = unservable(repo, load)
    if not problems:
        return
    by_fix: dict[str, list[str]] = {}
    for problem in problems:
        by_fix.setdefault(problem.fix, []).append(str(problem))
    said = "; ".join(f"{', '.join(models)}: {fix}" for fix, models in by_fix.items())
    raise NotServable(f"PyTriton's tritonserver runs only Python-backend models, on the CPU; {said}")


def models_to_load(extra: Sequence[str]) -> list[str] | None:
    """The models tritonserver's own flags in `extra` load at startup: with --model-control-mode=explicit,
    those named by --load-model (none without one; every model for `*`); None: every model."""
    flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    flags.add_argument("--model-control-mode", default="none")
    flags.add_argument("--load-model", action="append", default=[])
    known, _ = flags.parse_known_args(list(extra))
    if known.model_control_mode.lower() != "explicit" or "*" in known.load_model:
        return None
    return known.load_model


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
    p.epilog = (
        "After --: more tritonserver flags, passed on as they are (--log-verbose=1, ...); with "
        "--model-control-mode=explicit only the --load-model models are checked."
    )
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = p.parse_args(argv[:cut]), argv[cut + 1 :]
    try:
        if reason := missing():
            raise NotServable(reason)
        check_repository(args.repo, models_to_load(extra))
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
