"""The probe set: fixed images and their FP32 embeddings, written at export, read back checked.

An INT8 ONNX file that is accurate on ONNX Runtime's CPU provider can still give an engine that is
not (TensorRT fuses, reorders and picks its own kernels on the device). So the export folder
carries a few dozen fixed images and the FP32 model's embeddings of them, against which every
backend and artifact is compared where it runs (`backend.verify_backend`):

    probes = load_probe_set("runs/fmnist/export")             # every file checked against its sha256

Layout, in the export folder:

    probes/probes.json  format, count, image size, embedding size, the checkpoint's sha256 (the space),
                        the FP32 model's sha256, {file: sha256} of every image and of the embeddings,
                        pass thresholds per precision, and the figures each artifact had at export
    probes/000.png …    the images, resized and centre-cropped to the model's input size (so a folder of
                        large photos stays small; the runtime's resize leaves them as they are)
    probes/fp32.npy     (N, d) float32: the FP32 ONNX model on ort-cpu, decoded as `invedge embed` does (decode and
                        preprocessing as shipped), written after the export's parity check passed

This module owns that format: where the folder is, writing it, reading and validating it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, InvedgeError, ModelError
from ..files import _umask, atomic_write_json, read_json, replace_folder, sha256_file
from ..integrity import check_probe_manifest
from ..metadata import ModelMeta

FORMAT = "invspread-edge/probes/1"
PROBE_DIR = "probes"
MANIFEST = "probes.json"
EMBEDDINGS = "fp32.npy"
DEFAULT_COUNT = 32

# Pass thresholds per precision: mean cosine, min cosine, top-1 agreement (fraction of probes).
# Written into probes.json at export; `backend.measure` judges a backend by them.
# - fp32: TensorRT runs FP32 convolutions in TF32 on Ampere and newer GPUs (its default), which
#   moves embeddings by ~1e-4 in cosine; anything past 0.9995 mean is not a faithful FP32 engine.
# - fp16 / bf16: half-precision rounding of activations (bf16 has 3 fewer mantissa bits).
# - int8: the export's own gate (`--min-cosine`, default 0.98 mean on held-out images); min 0.90
#   catches the engine that is right on average but wrong on a few images.
# - top-1 agreement is tie-aware (`verify.top1_agreement`): a probe disagrees only when the backend
#   picks a neighbour that FP32 finds clearly farther than its nearest (farther than the error the
#   precision's mean cosine accepts can explain); 0.8 for int8 allows 6 of 32.
THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"mean_cosine": 0.9995, "min_cosine": 0.998, "top1_agreement": 0.95},
    "fp16": {"mean_cosine": 0.999, "min_cosine": 0.99, "top1_agreement": 0.9},
    "bf16": {"mean_cosine": 0.995, "min_cosine": 0.98, "top1_agreement": 0.85},
    "int8": {"mean_cosine": 0.98, "min_cosine": 0.9, "top1_agreement": 0.8},
    "int8-cpu": {"mean_cosine": 0.98, "min_cosine": 0.9, "top1_agreement": 0.8},
}
FIGURES = ("mean_cosine", "min_cosine", "top1_agreement")
DAMAGED_HINT = "Re-export the model ('invedge export RUN') to write a new probe set"

Log = Callable[[str], None]


@dataclass(frozen=True)
class ProbeSet:
    """A loaded, checked probe set."""

    folder: Path
    paths: tuple[Path, ...]
    embeddings: np.ndarray  # (N, d) float32, L2-normalised
    checkpoint_sha256: str
    image_size: int
    thresholds: dict[str, dict[str, float]]
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.paths)

    def thresholds_for(self, precision: str) -> dict[str, float]:
        found = self.thresholds.get(precision) or THRESHOLDS.get(precision)
        if found is None:
            raise InvedgeError(
                f"the probe set has no thresholds for precision {precision!r}",
                f"Known: {', '.join(self.thresholds)}",
            )
        return found


# --- where a probe set lives ----------------------------------------------------------------------


def probe_folder(model: str | os.PathLike[str]) -> Path:
    """The probe folder for an .onnx file, an export folder or a run folder (it may not exist)."""
    path = Path(model)
    if path.is_file() or path.suffix in (".onnx", ".engine"):
        return path.parent / PROBE_DIR
    if not (path / PROBE_DIR).exists() and (path / "export").is_dir():
        return path / "export" / PROBE_DIR
    return path / PROBE_DIR


def find_probe_set(model: str | os.PathLike[str]) -> Path | None:
    """The probe folder beside `model` when one was written there, else None."""
    folder = probe_folder(model)
    return folder if (folder / MANIFEST).exists() else None


# --- writing, at export ---------------------------------------------------------------------------


def write_probe_set(
    out_dir: str | os.PathLike[str],
    fp32_model: str | os.PathLike[str],
    images: Sequence[Any],
    ids: Sequence[str],
    *,
    count: int = DEFAULT_COUNT,
    min_mean_cosine: float | None = None,
    log: Log = lambda message: None,
) -> ProbeSet:
    """Write `out_dir/probes/`: the first `count` of `images` (PIL images, or anything with `.pil(i)`
    and len) as PNG files, and the FP32 model's embeddings of those files on ort-cpu.

    `min_mean_cosine`: the export's `--min-cosine`, which becomes the INT8 mean-cosine threshold.
    The folder is built beside the old one and swapped in at the end: a failure leaves the old set.
    """
    from ..metadata import read_model_meta

    out_dir, fp32_model = Path(out_dir), Path(fp32_model)
    meta = read_model_meta(fp32_model)
    if meta.precision != "fp32":
        raise ModelError(
            f"the probe set's reference must be the FP32 model; {fp32_model} is {meta.precision}"
        )
    n = min(count, len(images))
    if n < 2:
        raise DataError(f"a probe set needs at least 2 images, {n} given", "Pass more calibration images")
    log(f"writing the probe set ({n} images and their FP32 embeddings) for 'invedge verify'")
    work = Path(tempfile.mkdtemp(prefix=f".{PROBE_DIR}-new-", dir=out_dir))
    os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes 0700: the probes stay readable like the models
    try:
        files = _write_images(work, images, n, meta.image_size)
        _write_embeddings(work, fp32_model, meta, list(files))
        manifest = _manifest(work, fp32_model, meta, files, ids, _thresholds(min_mean_cosine))
        atomic_write_json(work / MANIFEST, manifest)
        replace_folder(work, out_dir / PROBE_DIR)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return load_probe_set(out_dir)


def _write_images(work: Path, images: Sequence[Any], n: int, size: int) -> dict[str, str]:
    """The first `n` images as PNG files at the model's input size; file name → sha256, in order."""
    from ..preprocess import resize_center_crop, to_rgb

    files: dict[str, str] = {}
    for i in range(n):
        pil = images.pil(i) if hasattr(images, "pil") else images[i]
        name = f"{i:03d}.png"
        resize_center_crop(to_rgb(pil), size).save(work / name, format="PNG")
        files[name] = sha256_file(work / name)
    return files


def _write_embeddings(work: Path, fp32_model: Path, meta: ModelMeta, names: list[str]) -> None:
    """The FP32 model's embeddings of the written files, decoded and preprocessed as shipped."""
    from ..backends.ort import OrtBackend
    from ..preprocess import load_uint8

    with OrtBackend(fp32_model, "ort-cpu", meta=meta) as backend:
        emb = backend.embed_uint8(load_uint8([work / name for name in names], meta.image_size))
    if emb.shape != (len(names), meta.embedding_dim) or not np.isfinite(emb).all():
        raise ModelError(f"the FP32 model gave unusable probe embeddings (shape {emb.shape})")
    np.save(work / EMBEDDINGS, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)


def _thresholds(min_mean_cosine: float | None) -> dict[str, dict[str, float]]:
    """THRESHOLDS, with the export's --min-cosine as the INT8 mean-cosine bound when given."""
    thresholds = {p: dict(t) for p, t in THRESHOLDS.items()}
    if min_mean_cosine is not None:
        for p in ("int8", "int8-cpu"):
            thresholds[p]["mean_cosine"] = float(min_mean_cosine)
    return thresholds


def _manifest(
    work: Path,
    fp32_model: Path,
    meta: ModelMeta,
    files: dict[str, str],
    ids: Sequence[str],
    thresholds: dict[str, dict[str, float]],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "count": len(files),
        "image_size": meta.image_size,
        "embedding_dim": meta.embedding_dim,
        "checkpoint_sha256": meta.checkpoint_sha256,
        "reference": {
            "file": fp32_model.name,
            "sha256": sha256_file(fp32_model),
            "backend": "ort-cpu",
            "precision": "fp32",
        },
        "images": [
            {"file": name, "id": str(ids[i]), "sha256": sha} for i, (name, sha) in enumerate(files.items())
        ],
        "embeddings": {"file": EMBEDDINGS, "sha256": sha256_file(work / EMBEDDINGS)},
        "thresholds": thresholds,
        "figures": "mean/min cosine to the FP32 embeddings, top-1 neighbour agreement among the probes",
        "export_check": {},
    }


def record_export_check(probes: ProbeSet, figures: dict[str, Any]) -> None:
    """Store the figures each artifact had at export (precision → figures) in probes.json."""
    atomic_write_json(probes.folder / MANIFEST, {**probes.manifest, "export_check": figures})


# --- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listing:
    """What probes.json lists, its types checked."""

    images: list[tuple[str, str]]  # (file, sha256)
    embeddings: tuple[str, str]
    image_size: int
    embedding_dim: int
    count: int
    checkpoint_sha256: str
    thresholds: dict[str, dict[str, float]]

    @property
    def files(self) -> list[tuple[str, str]]:
        return [*self.images, self.embeddings]


def load_probe_set(model: str | os.PathLike[str]) -> ProbeSet:
    """The probe set beside `model` (an export folder, a run folder or an .onnx file), every file
    checked against the sha256 in probes.json, and probes.json against the sha256 the export's
    report.json records (when it does); a missing, damaged or foreign file raises DataError."""
    folder = probe_folder(model)
    manifest = _read_manifest(folder)
    if why := check_probe_manifest(folder.parent, folder / MANIFEST):  # thresholds edited, a flipped byte
        raise DataError(f"probe manifest {folder / MANIFEST} is damaged: {why}", DAMAGED_HINT)
    listing = _listing(manifest, folder / MANIFEST)
    for name, expected in listing.files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"probe file {path} is missing", DAMAGED_HINT)
        if sha256_file(path) != expected:
            raise DataError(
                f"probe file {path} does not match its sha256 in {MANIFEST} (damaged)", DAMAGED_HINT
            )
    emb = _read_embeddings(folder / listing.embeddings[0], listing.count, listing.embedding_dim)
    paths = tuple(folder / name for name, _ in listing.images)
    _check_images(paths, listing.image_size)
    return ProbeSet(
        folder, paths, emb, listing.checkpoint_sha256, listing.image_size, listing.thresholds, manifest
    )


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise DataError(
            f"no probe set in {folder.parent} ({PROBE_DIR}/{MANIFEST} is missing)",
            "Re-export the model with 'invedge export RUN': every export writes one",
        )
    try:
        manifest = read_json(path, "probe manifest")
    except InvedgeError as exc:
        raise DataError(exc.message, DAMAGED_HINT) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not an invspread-edge probe manifest ({FORMAT})", DAMAGED_HINT)
    return manifest


def _listing(manifest: dict[str, Any], path: Path) -> _Listing:
    try:
        listing = _Listing(
            images=[(str(e["file"]), str(e["sha256"])) for e in manifest["images"]],
            embeddings=(str(manifest["embeddings"]["file"]), str(manifest["embeddings"]["sha256"])),
            image_size=int(manifest["image_size"]),
            embedding_dim=int(manifest["embedding_dim"]),
            count=int(manifest["count"]),
            checkpoint_sha256=str(manifest["checkpoint_sha256"]),
            thresholds={
                str(p): {k: float(t[k]) for k in FIGURES} for p, t in dict(manifest["thresholds"]).items()
            },
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path} is damaged ({exc.__class__.__name__}: {exc})", DAMAGED_HINT) from exc
    if listing.count != len(listing.images) or listing.count < 2:
        raise DataError(
            f"{path} is damaged: count {listing.count}, {len(listing.images)} images listed", DAMAGED_HINT
        )
    for name, _ in listing.files:
        if Path(name).name != name:  # file names only: a manifest never points outside its folder
            raise DataError(f"{path} is damaged: file name {name!r}", DAMAGED_HINT)
    return listing


def _read_embeddings(path: Path, count: int, dim: int) -> np.ndarray:
    try:
        emb = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable .npy file ({exc})", DAMAGED_HINT) from exc
    if emb.dtype != np.float32 or emb.shape != (count, dim) or not np.isfinite(emb).all():
        raise DataError(
            f"{path} holds {emb.dtype} {emb.shape}; ({count}, {dim}) finite float32 expected", DAMAGED_HINT
        )
    return emb


def _check_images(paths: tuple[Path, ...], size: int) -> None:
    from ..preprocess import load_image

    for path in paths:
        img = load_image(path)  # DataError names an undecodable file
        if img.size != (size, size):
            raise DataError(
                f"probe image {path} is {img.size[0]}x{img.size[1]}, not {size}x{size}", DAMAGED_HINT
            )


def check_space(probes: ProbeSet, meta: ModelMeta, source: str = "the model") -> None:
    """The probe set must come from the same checkpoint (embedding space) as the model checked."""
    if meta.checkpoint_sha256 != probes.checkpoint_sha256 or meta.image_size != probes.image_size:
        raise ModelError(
            f"the probe set in {probes.folder} was made from another model than {source} "
            f"(checkpoint {probes.checkpoint_sha256[:12]}…, the model's {meta.checkpoint_sha256[:12]}…)",
            "Verify the export folder the model came from, or re-export it",
        )
    if meta.embedding_dim != probes.embeddings.shape[1]:
        raise ModelError(
            f"{source} gives {meta.embedding_dim}-d embeddings, the probe set {probes.embeddings.shape[1]}-d"
        )
