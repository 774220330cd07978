"""The ONNX Runtime TensorRT provider's engine cache, keyed and checked like the native one.

ONNX Runtime's TensorRT provider (`trt_engine_cache_enable`) reuses any engine file it finds in
`trt_engine_cache_path` whose name matches the subgraph; it compares the optimization profile
with its `.profile` file, but not the TensorRT version, the GPU or the ONNX Runtime version (its
documentation asks the user to clean the cache when any of them changes). An engine is code for
one GPU and one TensorRT, so here the cache is one folder per key, like `tensorrt/cache.py`'s
EngineKey: ONNX sha256, ONNX Runtime and TensorRT versions, GPU name and compute capability, and
the provider options an engine depends on (precision flags, batch profile, workspace). A sidecar
`invedge-cache.json` in the folder, written only after the session was built and ran, holds the
key and the sha256 of every engine and profile file the provider wrote. A folder whose sidecar is
missing, damaged or names another key, or whose engine files differ from the hashes it records (a
damaged, replaced or added file: the provider would load any by its name), is emptied before
use: an unverified cache is never reused.

No onnxruntime, TensorRT or CUDA import here: the GPU and TensorRT version are read through the
driver's and libnvinfer's stable C entry points (ctypes), and "unknown" is recorded where absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import console
from ..errors import InvedgeError
from ..files import atomic_write_json, read_json, sha256_file
from ..tensorrt.cache import engine_mismatches

SIDECAR = "invedge-cache.json"
SIDECAR_FORMAT = "invspread-edge-ort-trt-cache/1"
# provider options an engine depends on (paths and switches that do not change the engine are left out)
KEYED_OPTIONS = (
    "trt_fp16_enable",
    "trt_int8_enable",
    "trt_max_workspace_size",
    "trt_profile_min_shapes",
    "trt_profile_opt_shapes",
    "trt_profile_max_shapes",
)
UNKNOWN = "unknown"
ENGINE_FILES = ("*.engine", "*.profile")  # what the provider writes and reuses by name (not *.timing)


@dataclass(frozen=True)
class OrtTrtKey:
    """Everything a TensorRT-provider engine depends on. Equal keys: the cached engine may be reused."""

    onnx_sha256: str
    onnxruntime_version: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    options: dict[str, str] = field(default_factory=dict)

    def mismatches(self, other: OrtTrtKey) -> list[str]:
        """Why a cache made for `other` cannot serve `self` ([] = reusable)."""
        reasons = engine_mismatches(self, other)
        if other.onnxruntime_version != self.onnxruntime_version:
            reasons.append(
                f"built by onnxruntime {other.onnxruntime_version}, this is {self.onnxruntime_version}"
            )
        if other.options != self.options:
            changed = sorted(
                k
                for k in set(other.options) | set(self.options)
                if other.options.get(k) != self.options.get(k)
            )
            reasons.append(f"built with other provider options ({', '.join(changed)})")
        return reasons


def current_key(
    onnx_path: str | os.PathLike[str],
    precision: str,
    provider_options: dict[str, Any],
    onnxruntime_version: str,
    device_id: int = 0,
) -> OrtTrtKey:
    gpu_name, capability = gpu_identity(device_id)
    return OrtTrtKey(
        onnx_sha256=sha256_file(onnx_path),
        onnxruntime_version=onnxruntime_version,
        tensorrt_version=tensorrt_version(),
        gpu_name=gpu_name,
        compute_capability=capability,
        precision=precision,
        options={k: str(provider_options[k]) for k in KEYED_OPTIONS if k in provider_options},
    )


def slot_dir(base: str | os.PathLike[str], onnx_path: str | os.PathLike[str], key: OrtTrtKey) -> Path:
    """One folder per (model file, ONNX content, precision, batch profile) under `base`; a change of
    GPU, TensorRT or onnxruntime empties the folder (a device has one of each at a time)."""
    stem = Path(onnx_path).name.removesuffix(".onnx")
    profile = key.options.get("trt_profile_max_shapes", "").rpartition(":")[2].split("x")[0] or "0"
    opt = key.options.get("trt_profile_opt_shapes", "").rpartition(":")[2].split("x")[0] or "0"
    return Path(base) / f"{stem}-{key.onnx_sha256[:12]}-{key.precision}-b{opt}-{profile}"


def read_slot_key(slot: str | os.PathLike[str]) -> OrtTrtKey | None:
    """The key the sidecar in `slot` names; None when there is none; InvedgeError when it is damaged."""
    found = read_slot(slot)
    return None if found is None else found[0]


def read_slot(slot: str | os.PathLike[str]) -> tuple[OrtTrtKey, dict[str, str] | None] | None:
    """(the key, {engine file: sha256}) the sidecar in `slot` records (None: no hashes, an older
    sidecar); None when there is no sidecar; InvedgeError when it is damaged."""
    path = Path(slot) / SIDECAR
    if not path.exists():
        return None
    doc = read_json(path, "TensorRT provider cache sidecar")
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise InvedgeError(f"{path} is not an invspread-edge cache sidecar")
    try:
        key = OrtTrtKey(**doc["key"])
    except (KeyError, TypeError) as exc:
        raise InvedgeError(f"{path} is damaged ({exc!r})") from exc
    files = doc.get("files")
    if files is not None and not (
        isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise InvedgeError(f"{path} is damaged (its engine hashes are not a mapping of names to sha256)")
    return key, files


def engine_files(slot: str | os.PathLike[str]) -> dict[str, str]:
    """{name: sha256} of the engine and profile files in `slot` (what its sidecar records)."""
    found = (p for pattern in ENGINE_FILES for p in Path(slot).glob(pattern) if p.is_file())
    return {p.name: sha256_file(p) for p in sorted(found)}


def _changed_files(slot: Path, recorded: dict[str, str] | None) -> list[str]:
    """Why the engine files in `slot` are not the ones its sidecar vouches for ([] = they are)."""
    if recorded is None:
        return ["its sidecar records no hashes of its engine files (an older invedge wrote it)"]
    here = engine_files(slot)
    changed = sorted(n for n in set(here) | set(recorded) if here.get(n) != recorded.get(n))
    return (
        [f"its engine files differ from the hashes its sidecar records ({', '.join(changed)})"]
        if changed
        else []
    )


def listing(slot: str | os.PathLike[str] | None) -> dict[str, int]:
    """name → mtime_ns of the files in a slot (before a session: what its engine build adds)."""
    if slot is None or not Path(slot).is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in Path(slot).iterdir() if p.is_file()}


def empty_failed_slot(slot: Path, before: dict[str, int]) -> None:
    """Empty a slot whose new engine failed its check, so no engine of it is ever reused."""
    written = sorted(n for n, t in listing(slot).items() if before.get(n) != t)
    for path in slot.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if written:
        console.info(f"removed the engine files of the failed check: {', '.join(written)}")


def prepare_slot(slot: str | os.PathLike[str], key: OrtTrtKey) -> str:
    """Make `slot` safe to hand to the provider: "cached" when its sidecar names `key`, else the
    reason it was emptied (or "new"). Call under the slot's lock."""
    slot = Path(slot)
    if not slot.exists() or not any(slot.iterdir()):
        slot.mkdir(parents=True, exist_ok=True)
        return "new"
    try:
        found = read_slot(slot)
        reasons = (
            ["it has no sidecar, so nothing shows what it was built for"]
            if found is None
            else key.mismatches(found[0]) or _changed_files(slot, found[1])
        )
    except InvedgeError as exc:
        reasons = [f"its sidecar is unreadable ({exc.message})"]
    if not reasons:
        return "cached"
    reason = "; ".join(reasons)
    console.info(f"TensorRT provider cache {slot}: {reason}; starting it afresh (the engine is rebuilt once)")
    shutil.rmtree(slot, ignore_errors=True)
    slot.mkdir(parents=True, exist_ok=True)
    return reason


def write_slot_sidecar(slot: str | os.PathLike[str], key: OrtTrtKey) -> Path:
    """Record `key` and the engine files' hashes in `slot`: only after the session was built and
    ran (see the module docstring)."""
    path = Path(slot) / SIDECAR
    atomic_write_json(path, {"format": SIDECAR_FORMAT, "key": asdict(key), "files": engine_files(slot)})
    return path


# --- the device, without CUDA Python packages ------------------------------------------------------


def gpu_identity(device_id: int = 0) -> tuple[str, str]:
    """(name, "major.minor") of CUDA device `device_id` via the driver API (libcuda: cuInit,
    cuDeviceGet, cuDeviceGetName, cuDeviceGetAttribute); (UNKNOWN, UNKNOWN) without a driver."""
    lib = _load("cuda", ("libcuda.so.1", "libcuda.so", "nvcuda.dll"))
    if lib is None:
        return UNKNOWN, UNKNOWN
    try:
        device = ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        major, minor = ctypes.c_int(), ctypes.c_int()
        if lib.cuInit(0) != 0 or lib.cuDeviceGet(ctypes.byref(device), int(device_id)) != 0:
            return UNKNOWN, UNKNOWN
        if lib.cuDeviceGetName(name, len(name), device) != 0:
            return UNKNOWN, UNKNOWN
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
        if lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device) != 0:
            return name.value.decode(errors="replace"), UNKNOWN
        if lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device) != 0:
            return name.value.decode(errors="replace"), UNKNOWN
    except (AttributeError, OSError):
        return UNKNOWN, UNKNOWN
    return name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}"


def tensorrt_version() -> str:
    """The TensorRT library the provider will load: libnvinfer's getInferLibVersion() (an integer
    such as 100300 for 10.3.0), else the `tensorrt` package's version, else UNKNOWN."""
    names = ("libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")
    lib = _load("nvinfer", names)
    if lib is not None:
        try:
            lib.getInferLibVersion.restype = ctypes.c_int32
            return f"libnvinfer {int(lib.getInferLibVersion())}"
        except (AttributeError, OSError):
            pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("tensorrt")
    except (ImportError, PackageNotFoundError):
        return UNKNOWN


def _load(short: str, names: tuple[str, ...]) -> Any:
    for name in (*names, ctypes.util.find_library(short)):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None
