"""API-only TensorRT installs for tests: the real Python bindings of each supported version, no GPU.

The one place the tests download: `make test-trt` runs this file (`prepare(v, download=True)`), which
makes, for each version, in `.cache/tensorrt-api/<version>/` (git-ignored):
  1. `pip download --no-deps` the real `tensorrt-cu12-bindings` wheel, a `cuda-bindings` wheel and
     `cuda-pathfinder` (cuda-python's runtime module, which imports without a driver);
  2. unpack them into `site/` and add NVIDIA's two-line `tensorrt` package (what `tensorrt-cu12`
     installs: `from tensorrt_bindings import *`);
  3. build `stub.c` with gcc under the sonames the bindings link against, into `lib/`;
  4. check that `import tensorrt` works with `PYTHONPATH=site LD_LIBRARY_PATH=lib`.
The tests call `prepare(version)`, which only reads that cache: it raises `Unavailable` (the caller
skips, with the reason) when the install is not there yet, naming `make test-trt`; with `download=True`
it raises `Unavailable` when gcc, pip's registry or a wheel is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]  # tests/runtime/native_tensorrt/real_api -> the repository
CACHE = REPO / ".cache" / "tensorrt-api"
STUB = HERE / "stub.c"
LIBS = ("nvinfer", "nvonnxparser", "nvinfer_plugin")
PREPARE_COMMAND = "make test-trt"  # what makes the installs (the default test run never downloads)

# TensorRT version -> the wheels of its API-only install. The cuda-bindings majors differ on purpose:
# 12.x (with `cuda.cudart` still present) beside TensorRT 10.3, 13.x (only `cuda.bindings`) beside 11.x,
# so both cuda-python generations are exercised; the pairing is for API coverage only.
VERSIONS: dict[str, tuple[str, ...]] = {
    "10.3.0": ("tensorrt-cu12-bindings==10.3.0", "cuda-bindings==12.9.4", "cuda-pathfinder==1.9.1"),
    "11.4.0.106": ("tensorrt-cu12-bindings==11.4.0.106", "cuda-bindings==13.5.0", "cuda-pathfinder==1.9.1"),
}
TENSORRT_SHIM = "from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__\n"


class Unavailable(Exception):
    """This machine cannot prepare the install (no gcc, no registry, no wheel for this Python)."""


@dataclass(frozen=True)
class ApiInstall:
    version: str
    root: Path

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.site), env.get("PYTHONPATH", "")) if p)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.lib), env.get("LD_LIBRARY_PATH", "")) if p
        )
        return env


def prepare(version: str, cache: Path = CACHE, download: bool = False) -> ApiInstall:
    """The API-only install of `version` from the cache; `download=True` makes it first if needed.

    Tests never download: whether they run must not depend on the network or the package index.
    """
    specs = VERSIONS[version]
    install = ApiInstall(version, cache / version)
    stamp = json.dumps(
        {"specs": specs, "stub": hashlib.sha256(STUB.read_bytes()).hexdigest()}, sort_keys=True
    )
    ready = install.root / ".ready"
    if ready.exists() and ready.read_text() == stamp:
        return install
    if not download:
        state = "is for other wheels or stub" if ready.exists() else "is not prepared"
        raise Unavailable(
            f"the API-only install in {install.root} {state}; "
            f"run `{PREPARE_COMMAND}` (downloads the bindings wheels once)"
        )
    if platform.system() != "Linux" or platform.machine() != "x86_64" or sys.implementation.name != "cpython":
        raise Unavailable(
            f"TensorRT's bindings wheels are used on CPython x86-64 Linux only, not {platform.platform()}"
        )
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Unavailable("no C compiler (gcc) to build the stub TensorRT libraries")
    install.root.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{version}.lock"):
        if ready.exists() and ready.read_text() == stamp:
            return install
        shutil.rmtree(install.site, ignore_errors=True)
        shutil.rmtree(install.lib, ignore_errors=True)
        downloads = install.root / "downloads"
        for spec in specs:
            _unpack(_download(spec, downloads), install.site)
        (install.site / "tensorrt").mkdir(exist_ok=True)
        (install.site / "tensorrt" / "__init__.py").write_text(TENSORRT_SHIM)
        _build_stubs(gcc, version.split(".")[0], install.lib)
        found = _smoke(install)
        if found != version:
            raise Unavailable(f"the prepared install imports TensorRT {found!r}, not {version}")
        ready.write_text(stamp)
    return install


def _download(spec: str, folder: Path) -> Path:
    name, _, want = spec.partition("==")
    prefix = name.replace("-", "_") + "-" + want + "-"
    folder.mkdir(parents=True, exist_ok=True)
    cached = [p for p in folder.glob("*.whl") if p.name.startswith(prefix)]
    if cached:
        return cached[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(folder),
        spec,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"pip download {spec} timed out (package registry unreachable?)") from exc
    wheels = [p for p in folder.glob("*.whl") if p.name.startswith(prefix)]
    if proc.returncode != 0 or not wheels:
        tail = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING")][-3:]
        raise Unavailable(f"pip download {spec} failed (package registry unreachable?): {' | '.join(tail)}")
    return wheels[0]


def _unpack(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    for so in site.rglob("*.so"):  # zipfile drops the executable bit
        so.chmod(0o755)


def _build_stubs(gcc: str, major: str, lib: Path) -> None:
    lib.mkdir(parents=True, exist_ok=True)
    for name in LIBS:
        soname = f"lib{name}.so.{major}"
        cmd = [gcc, "-shared", "-fPIC", "-O1", f"-Wl,-soname,{soname}", "-o", str(lib / soname), str(STUB)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise Unavailable(f"gcc could not build the stub {soname}: {proc.stderr.strip()[-300:]}")


def _smoke(install: ApiInstall) -> str:
    code = "import tensorrt, cuda.bindings.runtime; print(tensorrt.__version__)"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=install.env(), capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise Unavailable(
            f"the prepared TensorRT {install.version} does not import: {proc.stderr.strip()[-400:]}"
        )
    return proc.stdout.strip()


@contextlib.contextmanager
def _locked(path: Path):
    """One preparer per version at a time (pytest-xdist workers share the cache)."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


if __name__ == "__main__":  # `make test-trt` runs this first: prepare every version now
    for v in VERSIONS:
        try:
            print(v, prepare(v, download=True).root)
        except Unavailable as exc:
            sys.exit(f"TensorRT {v}: cannot prepare the API-only install: {exc}")
