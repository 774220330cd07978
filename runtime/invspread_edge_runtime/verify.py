"""The probe set: fixed images and their FP32 embeddings, written at export; any backend checked against it.

An INT8 ONNX file that is accurate on ONNX Runtime's CPU provider can still give an engine that is
not (TensorRT fuses, reorders and picks its own kernels on the device). So the export folder
carries a few dozen fixed images and the FP32 model's embeddings of them, and every backend and
artifact can be compared with them where it runs:

    probes = load_probe_set("runs/fmnist/export")             # every file checked against its sha256
    with open_backend("runs/fmnist/export", "trt") as backend:
        result = verify_backend(backend, probes)               # preprocessing from backend.meta
    require_pass(result)                                       # VerifyFailed with the figures

Layout, in the export folder:

    probes/probes.json  format, count, image size, embedding size, the checkpoint's sha256 (the space),
                        the FP32 model's sha256, {file: sha256} of every image and of the embeddings,
                        pass thresholds per precision, and the figures each artifact had at export
    probes/000.png …    the images, resized and centre-cropped to the model's input size (so a folder of
                        large photos stays small; the runtime's resize leaves them as they are)
    probes/fp32.npy     (N, d) float32: the FP32 ONNX model on ort-cpu, through `Embedder` (decode and
                        preprocessing as shipped), written after the export's parity check passed

Figures, against the FP32 embeddings of the same images: mean and minimum cosine, and top-1
neighbour agreement among the probes (each probe's nearest other probe under FP32 and under the
backend are the same). The native TensorRT build (`tensorrt.build`) and ONNX Runtime's TensorRT
provider (`backends.ort`) run this right after building an engine, before it is cached or used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import console
from .accuracy import cosine_stats, nearest_neighbours
from .backends.base import Backend
from .errors import AccuracyError, DataError, InvedgeError, ModelError
from .files import _umask, atomic_write_json, read_json, replace_folder, sha256_file
from .metadata import ModelMeta

FORMAT = "invspread-edge/probes/1"
PROBE_DIR = "probes"
MANIFEST = "probes.json"
EMBEDDINGS = "fp32.npy"
DEFAULT_COUNT = 32

# Pass thresholds per precision: mean cosine, min cosine, top-1 agreement (fraction of probes).
# - fp32: TensorRT runs FP32 convolutions in TF32 on Ampere and newer GPUs (its default), which
#   moves embeddings by ~1e-4 in cosine; anything past 0.9995 mean is not a faithful FP32 engine.
# - fp16 / bf16: half-precision rounding of activations (bf16 has 3 fewer mantissa bits).
# - int8: the export's own gate (`--min-cosine`, default 0.98 mean on held-out images); min 0.90
#   catches the engine that is right on average but wrong on a few images.
# - top-1 agreement is tie-aware (`top1_agreement`): a probe disagrees only when the backend picks a
#   neighbour that FP32 finds clearly farther than its nearest; 0.8 for int8 allows 6 of 32.
THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"mean_cosine": 0.9995, "min_cosine": 0.998, "top1_agreement": 0.95},
    "fp16": {"mean_cosine": 0.999, "min_cosine": 0.99, "top1_agreement": 0.9},
    "bf16": {"mean_cosine": 0.995, "min_cosine": 0.98, "top1_agreement": 0.85},
    "int8": {"mean_cosine": 0.98, "min_cosine": 0.9, "top1_agreement": 0.8},
    "int8-cpu": {"mean_cosine": 0.98, "min_cosine": 0.9, "top1_agreement": 0.8},
}
TIE_FRACTION = 0.1  # top-1 agreement: neighbours this close (share of the similarity spread) are tied
FIGURES = ("mean_cosine", "min_cosine", "top1_agreement")
DAMAGED_HINT = "Re-export the model ('invedge export RUN') to write a new probe set"

Log = Callable[[str], None]


class VerifyFailed(AccuracyError):
    """A backend × artifact whose embeddings of the probe set fall below the stored thresholds."""

    def __init__(self, result: VerifyResult, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.result = result


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


@dataclass
class VerifyResult:
    precision: str
    backend: str
    device: str
    model_file: str
    probes: int
    mean_cosine: float
    min_cosine: float
    top1_agreement: float  # ties within TIE_FRACTION count as agreeing (see `top1_agreement`)
    top1_strict: float  # the same neighbour exactly (the export's and the bench's figure)
    thresholds: dict[str, float]
    failures: list[str] = field(default_factory=list)  # one per figure below its threshold

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def agreeing(self) -> str:
        """'31/32': probes whose top-1 neighbour agrees ('nan/32' for NaN outputs)."""
        if not np.isfinite(self.top1_agreement):
            return f"nan/{self.probes}"
        return f"{round(self.top1_agreement * self.probes)}/{self.probes}"

    def summary(self) -> str:
        """'mean cos 0.99991, min 0.99902, top-1 agreement 31/32' (the figures, short)."""
        return f"mean cos {self.mean_cosine:.5f}, min {self.min_cosine:.5f}, top-1 agreement {self.agreeing}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN figures (an engine that gave NaN) become None."""
        doc = {**asdict(self), "status": self.status}
        return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in doc.items()}


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
    from .backends.ort import OrtBackend
    from .embedder import Embedder
    from .metadata import read_model_meta
    from .preprocess import resize_center_crop, to_rgb

    out_dir, fp32_model = Path(out_dir), Path(fp32_model)
    meta = read_model_meta(fp32_model)
    if meta.precision != "fp32":
        raise ModelError(
            f"the probe set's reference must be the FP32 model; {fp32_model} is {meta.precision}"
        )
    n = min(count, len(images))
    if n < 2:
        raise DataError(f"a probe set needs at least 2 images, {n} given", "Pass more calibration images")
    thresholds = {p: dict(t) for p, t in THRESHOLDS.items()}
    if min_mean_cosine is not None:
        for p in ("int8", "int8-cpu"):
            thresholds[p]["mean_cosine"] = float(min_mean_cosine)
    log(f"writing the probe set ({n} images and their FP32 embeddings) for 'invedge verify'")
    work = Path(tempfile.mkdtemp(prefix=f".{PROBE_DIR}-new-", dir=out_dir))
    os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes 0700: the probes stay readable like the models
    try:
        files: dict[str, str] = {}
        names = []
        for i in range(n):
            pil = images.pil(i) if hasattr(images, "pil") else images[i]
            pil = resize_center_crop(to_rgb(pil), meta.image_size)
            name = f"{i:03d}.png"
            pil.save(work / name, format="PNG")
            files[name] = sha256_file(work / name)
            names.append(name)
        with Embedder(OrtBackend(fp32_model, "ort-cpu", meta=meta), batch_size=n) as embedder:
            emb = embedder.embed([work / name for name in names])
        if emb.shape != (n, meta.embedding_dim) or not np.isfinite(emb).all():
            raise ModelError(f"the FP32 model gave unusable probe embeddings (shape {emb.shape})")
        np.save(work / EMBEDDINGS, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)
        manifest = {
            "format": FORMAT,
            "count": n,
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
                {"file": name, "id": str(ids[i]), "sha256": files[name]} for i, name in enumerate(names)
            ],
            "embeddings": {"file": EMBEDDINGS, "sha256": sha256_file(work / EMBEDDINGS)},
            "thresholds": thresholds,
            "figures": "mean/min cosine to the FP32 embeddings, top-1 neighbour agreement among the probes",
            "export_check": {},
        }
        atomic_write_json(work / MANIFEST, manifest)
        replace_folder(work, out_dir / PROBE_DIR)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return load_probe_set(out_dir)


def check_exported(
    out_dir: str | os.PathLike[str], artifacts: Sequence[str | os.PathLike[str]], log: Log = lambda m: None
) -> list[str]:
    """Verify each exported artifact on ort-cpu against the probe set and store the figures in
    probes.json (`export_check`); returns one warning per artifact that does not pass."""
    from .backends.select import open_backend

    probes = load_probe_set(out_dir)
    figures: dict[str, Any] = {}
    warnings = []
    for artifact in artifacts:
        with open_backend(artifact, "ort-cpu") as backend:  # one file: its own precision
            result = verify_backend(backend, probes)
        figures[result.precision] = {"file": Path(artifact).name, **result.to_dict()}
        log(f"probe check of {Path(artifact).name} on ort-cpu: {result.status} ({result.summary()})")
        if not result.passed:
            warnings.append(
                f"{Path(artifact).name} does not pass its probe check on ort-cpu: {'; '.join(result.failures)}"
            )
    manifest = dict(probes.manifest)
    manifest["export_check"] = figures
    atomic_write_json(probes.folder / MANIFEST, manifest)
    return warnings


# --- reading --------------------------------------------------------------------------------------


def load_probe_set(model: str | os.PathLike[str]) -> ProbeSet:
    """The probe set beside `model` (an export folder, a run folder or an .onnx file), every file
    checked against the sha256 in probes.json; a missing, damaged or foreign file raises DataError."""
    from .preprocess import load_image

    folder = probe_folder(model)
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise DataError(
            f"no probe set in {folder.parent} ({PROBE_DIR}/{MANIFEST} is missing)",
            "Re-export the model with 'invedge export RUN' (exports since issue 12 write one)",
        )
    try:
        manifest = read_json(manifest_path, "probe manifest")
    except InvedgeError as exc:
        raise DataError(exc.message, DAMAGED_HINT) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{manifest_path} is not an invspread-edge probe manifest ({FORMAT})", DAMAGED_HINT)
    try:
        entries = [(str(e["file"]), str(e["sha256"])) for e in manifest["images"]]
        emb_entry = (str(manifest["embeddings"]["file"]), str(manifest["embeddings"]["sha256"]))
        size, dim = int(manifest["image_size"]), int(manifest["embedding_dim"])
        count, space = int(manifest["count"]), str(manifest["checkpoint_sha256"])
        thresholds = {
            str(p): {k: float(t[k]) for k in FIGURES} for p, t in dict(manifest["thresholds"]).items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(
            f"{manifest_path} is damaged ({exc.__class__.__name__}: {exc})", DAMAGED_HINT
        ) from exc
    if count != len(entries) or count < 2:
        raise DataError(
            f"{manifest_path} is damaged: count {count}, {len(entries)} images listed", DAMAGED_HINT
        )
    for name, _ in [*entries, emb_entry]:
        if Path(name).name != name:  # file names only: a manifest never points outside its folder
            raise DataError(f"{manifest_path} is damaged: file name {name!r}", DAMAGED_HINT)
    for name, expected in [*entries, emb_entry]:
        path = folder / name
        if not path.is_file():
            raise DataError(f"probe file {path} is missing", DAMAGED_HINT)
        if sha256_file(path) != expected:
            raise DataError(
                f"probe file {path} does not match its sha256 in {MANIFEST} (damaged)", DAMAGED_HINT
            )
    try:
        emb = np.load(folder / emb_entry[0], allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{folder / emb_entry[0]} is not a readable .npy file ({exc})", DAMAGED_HINT) from exc
    if emb.dtype != np.float32 or emb.shape != (count, dim) or not np.isfinite(emb).all():
        raise DataError(
            f"{folder / emb_entry[0]} holds {emb.dtype} {emb.shape}; ({count}, {dim}) finite float32 expected",
            DAMAGED_HINT,
        )
    paths = tuple(folder / name for name, _ in entries)
    for path in paths:
        img = load_image(path)  # DataError names an undecodable file
        if img.size != (size, size):
            raise DataError(
                f"probe image {path} is {img.size[0]}x{img.size[1]}, not {size}x{size}", DAMAGED_HINT
            )
    return ProbeSet(folder, paths, emb, space, size, thresholds, manifest)


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


# --- measuring ------------------------------------------------------------------------------------


def measure(
    reference: np.ndarray,
    candidate: np.ndarray,
    thresholds: dict[str, float],
    *,
    precision: str,
    backend: str = "",
    device: str = "",
    model_file: str = "",
) -> VerifyResult:
    """The figures of `candidate` against `reference` (both (N, d), same images) and the verdict."""
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if candidate.shape != reference.shape:
        raise ModelError(
            f"the backend gave embeddings of shape {candidate.shape}, {reference.shape} expected"
        )
    if np.isfinite(candidate).all():
        mean_cos, min_cos = cosine_stats(reference, candidate)
        agree, strict = top1_agreement(reference, candidate)
    else:  # NaN/inf out of an engine: as wrong as it gets, and said so
        mean_cos = min_cos = agree = strict = float("nan")
    figures = {"mean_cosine": mean_cos, "min_cosine": min_cos, "top1_agreement": agree}
    failures = []
    for name in FIGURES:
        value, bound = figures[name], thresholds[name]
        if not value >= bound:  # NaN fails too
            failures.append(f"{name.replace('_', ' ')} {value:.5f} < {bound:g}")
    return VerifyResult(
        precision=precision,
        backend=backend,
        device=device,
        model_file=model_file,
        probes=len(reference),
        mean_cosine=mean_cos,
        min_cosine=min_cos,
        top1_agreement=agree,
        top1_strict=strict,
        thresholds=dict(thresholds),
        failures=failures,
    )


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(tie-aware, strict) top-1 neighbour agreement among the probes.

    Strict: each probe's nearest other probe is the same under both embeddings. Tie-aware: the
    neighbour the candidate picks is, under the reference, the nearest or as near as makes no
    difference: within TIE_FRACTION of that probe's similarity spread (nearest minus median). A few
    dozen probes of ten classes hold near-ties (two shirts equally close to a third) whose order
    flips on any 1e-4 change; an untrained network, whose embeddings all point one way, is all ties.
    A broken engine picks neighbours no nearer than the median and fails either way.
    """
    sims = (reference @ reference.T).astype(np.float64)
    np.fill_diagonal(sims, np.nan)
    ref_nn = nearest_neighbours(reference, 1)[:, 0]
    cand_nn = nearest_neighbours(candidate, 1)[:, 0]
    rows = np.arange(len(reference))
    best = sims[rows, ref_nn]
    median = np.nanmedian(sims, axis=1)
    tolerance = TIE_FRACTION * np.maximum(best - median, 0.0)
    tied = sims[rows, cand_nn] >= best - tolerance
    return float(tied.mean()), float((ref_nn == cand_nn).mean())


class _Borrowed(Backend):
    """The caller's backend, lent to an Embedder that must not close it."""

    def __init__(self, inner: Backend, meta: ModelMeta) -> None:
        self.inner, self.meta, self.info, self.notes = inner, meta, inner.info, inner.notes

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.inner.infer(batch)


def embed_probes(backend: Backend, probes: ProbeSet, meta: ModelMeta) -> np.ndarray:
    """(N, d) L2-normalised embeddings of the probe files by `backend`, decoded and preprocessed by
    the runtime's `Embedder` (what `invedge embed` does), whatever the backend."""
    from .embedder import Embedder

    with Embedder(_Borrowed(backend, meta), batch_size=len(probes), decode_workers=1) as embedder:
        return embedder.embed(list(probes.paths))


def verify_backend(
    backend: Backend, probes: ProbeSet, meta: ModelMeta | None = None, precision: str | None = None
) -> VerifyResult:
    """Embed the probes with `backend` and judge the figures against the thresholds of `precision`
    (default: the backend's). `meta` defaults to the backend's own (`Backend.meta`, the ONNX
    file's); a wrapper that runs another model's outputs may pass the one it stands for."""
    meta = meta or backend.meta
    precision = precision or backend.info.precision or meta.precision
    check_space(probes, meta, Path(backend.info.model_path).name or "the model")
    emb = embed_probes(backend, probes, meta)
    return measure(
        probes.embeddings,
        emb,
        probes.thresholds_for(precision),
        precision=precision,
        backend=backend.info.name,
        device=backend.info.device,
        model_file=Path(backend.info.model_path).name,
    )


def require_pass(result: VerifyResult, what: str | None = None, kept: str = "") -> None:
    """Raise VerifyFailed with the figures and what to try when `result` did not pass."""
    if result.passed:
        return
    what = what or f"{result.model_file} ({result.precision}) on {result.backend}"
    raise VerifyFailed(
        result,
        f"{what} fails its probe check against FP32: {result.summary()} ({'; '.join(result.failures)})"
        + (f"; {kept}" if kept else ""),
        suggestion(result.precision),
    )


def suggestion(precision: str) -> str:
    if precision in ("int8", "int8-cpu"):
        return (
            "Try another precision (--precision fp16), or re-export with another --calib-method "
            "(percentile, entropy) or more --calib-count images"
        )
    if precision in ("fp16", "bf16"):
        return "Try --precision fp32, or another backend (--backend ort-cuda / ort-cpu)"
    return "Try another backend (--backend ort-cpu gives the reference), or another TensorRT version"


# --- right after an engine is built ---------------------------------------------------------------


def verify_new_engine(
    backend: Backend, onnx_path: str | os.PathLike[str], what: str, kept: str
) -> VerifyResult | None:
    """Check a freshly built engine against the probe set beside `onnx_path`.

    None (with a warning) when there is no probe set there: an ONNX file exported before probe
    sets existed, or one copied without its folder. Raises VerifyFailed when the engine fails.
    """
    folder = find_probe_set(onnx_path)
    if folder is None:
        _warn_unchecked(onnx_path, what)
        return None
    probes = load_probe_set(folder.parent)
    result = verify_backend(backend, probes)
    require_pass(result, f"the {what} built from {Path(onnx_path).name}", kept)
    return result


def _warn_unchecked(onnx_path: str | os.PathLike[str], what: str) -> None:
    console.warn(
        f"no probe set beside {Path(onnx_path).name} ({PROBE_DIR}/{MANIFEST}): the {what} is not "
        "checked against FP32; re-export with 'invedge export' to get one"
    )


def verify_plan(trt: Any, plan: bytes, onnx_path: str | os.PathLike[str], meta: ModelMeta) -> dict | None:
    """The native TensorRT build: run the serialized engine `plan` on the probes before it is written.

    Returns the figures for the engine's sidecar, None when there is no probe set; VerifyFailed
    when the engine fails (the caller writes nothing then).
    """
    if find_probe_set(onnx_path) is None:
        _warn_unchecked(onnx_path, "TensorRT engine")
        return None
    from .backends.trt import TensorRTBackend
    from .tensorrt import api
    from .tensorrt.load import LoadedEngine

    runtime = trt.Runtime(api.make_logger(trt))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise AccuracyError(f"TensorRT could not deserialise the engine it just built from {onnx_path}")
    backend = TensorRTBackend(onnx_path, loaded=LoadedEngine(engine, runtime, None, "built"), meta=meta)
    try:
        result = verify_new_engine(backend, onnx_path, "TensorRT engine", "the engine was not written")
    finally:
        backend.close()
    return None if result is None else result.to_dict()


def cache_listing(cache_dir: str | os.PathLike[str] | None) -> dict[str, int]:
    """name → mtime_ns of the files in ONNX Runtime's TensorRT cache folder (before a session)."""
    if cache_dir is None or not Path(cache_dir).is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in Path(cache_dir).iterdir() if p.is_file()}


def verify_ort_trt_session(
    backend: Backend,
    onnx_path: str | os.PathLike[str],
    cache_dir: Path,
    before: dict[str, int],
) -> VerifyResult | None:
    """ONNX Runtime's TensorRT provider builds its engine for the session (at creation, or at the
    first run, which the probes are) into `cache_dir`: the cache slot of this model and key
    (`backends.ort_cache`), whose sidecar is written only after this check passed. On a failure
    the slot is emptied, so no engine of it is ever reused, and VerifyFailed is raised."""
    try:
        return verify_new_engine(
            backend, onnx_path, "ONNX Runtime TensorRT engine", "its cache folder was emptied"
        )
    except VerifyFailed:
        backend.close()
        written = sorted(n for n, t in cache_listing(cache_dir).items() if before.get(n) != t)
        for path in Path(cache_dir).iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if written:
            console.info(f"removed the engine files of the failed check: {', '.join(written)}")
        raise


# --- invedge bench ----------------------------------------------------------------------------------


def bench_verdict(backend: Backend, source: str | os.PathLike[str], precision: str) -> str | None:
    """'pass 0.99991' / 'fail 0.93120' (mean cosine) for one bench row; None without a probe set."""
    if find_probe_set(source) is None:
        return None
    try:
        probes = load_probe_set(source)
        result = verify_backend(backend, probes, precision=precision)
    except Exception as exc:  # a bench row never dies of its probe check
        return f"error: {str(exc).splitlines()[0][:80] if str(exc) else exc.__class__.__name__}"
    return f"{result.status} {result.mean_cosine:.5f}"
