"""Pick a backend and the model artifact that suits it.

`backend="auto"` tries, in order, the native TensorRT backend, ONNX Runtime's TensorRT provider,
its CUDA provider, then its CPU provider, keeping the first that starts; `backend.notes` says which
was chosen and why the faster ones were not.

Given an export folder (or a run folder holding `export/`), the artifact follows the backend:
- CPU: `int8-cpu` (uint8 activations: the layout ONNX Runtime's CPU kernels are fast on), else fp32;
  fp16 and the symmetric int8 model run slower than fp32 on a CPU.
- TensorRT (native or provider): `int8` (symmetric Q/DQ) > fp16 > fp32; never `int8-cpu`
  (TensorRT rejects non-zero zero-points).
- ONNX Runtime CUDA: fp16 > fp32 > int8 (its Q/DQ kernels mostly dequantize to float).
`precision=` overrides the preference.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from .. import console
from ..errors import ConfigError, EngineError, InvedgeError, MissingDependency, ModelError
from ..integrity import ArtifactDamaged, ExportRecord, check_artifact, combined, read_report
from ..metadata import ARTIFACT_FILES, PRECISIONS, ModelMeta, read_model_meta
from ..tensorrt.cache import DEFAULT_MAX_BATCH
from .base import Backend, EngineCheck
from .triton import is_triton, shown

BACKENDS = ("trt", "ort-trt", "ort-cuda", "ort-cpu")  # fastest first: the order of `auto`
BACKEND_CHOICES = ("auto", *BACKENDS)  # what --backend accepts, besides a Triton server:
TRITON_CHOICE = "triton:URL"  # http://HOST:PORT[/MODEL] or grpc://HOST:PORT[/MODEL]: backends/triton.py
DEFAULT_BACKEND = "auto"
PREFERENCE = {
    "ort-cpu": ("int8-cpu", "fp32", "fp16", "int8"),
    "ort-cuda": ("fp16", "fp32", "int8", "int8-cpu"),
    "ort-trt": ("int8", "fp16", "fp32"),
    "trt": ("int8", "fp16", "fp32"),
}
# the names `invedge export` gives; not the DeepStream variants (model.deepstream*.onnx), which are no artifact
ARTIFACT_NAME = re.compile(r"^model(?!\.deepstream\.)([.-].*)?\.onnx$")


class Artifacts(dict[str, tuple[Path, ModelMeta]]):
    """precision → (path, metadata); `file` is the one .onnx file they were read from (None: a folder),
    so a missing precision is told as "you passed one file", not "the folder lacks it"."""

    file: Path | None = None


def find_artifacts(model: str | os.PathLike[str], damaged: list[ArtifactDamaged] | None = None) -> Artifacts:
    """precision → (path, metadata) for one .onnx file, an export folder, or a run folder.

    An export folder holds the artifacts of one checkpoint (each carries `invedge.checkpoint_sha256`),
    and that is checked here, never mixed: files of another checkpoint beside the ones `report.json`
    names are left out with a warning naming them; without a report to tell which set is current,
    a folder of mixed checkpoints is refused. A file named like ours (`model*.onnx`) that cannot be
    read is named in a warning (or in the error, when nothing usable is left), never skipped silently.

    An artifact that report.json records with another size, or that cannot be read although the
    report records it, is damaged (`integrity.py`): ArtifactDamaged names it, or, when `damaged` is
    a list (`invedge verify`, which reports every artifact), it is added there and left out.
    """
    path = Path(model)
    if path.is_file() and path.suffix == ".engine":
        raise ModelError(
            f"{path} is a TensorRT engine, not an ONNX model",
            f"Pass the export folder or its .onnx file (engines are built from it and cached), or check "
            f"this engine with: invedge verify {path.parent} --engine {path}",
        )
    if path.is_file():
        record, _ = read_report(path.parent)
        try:
            meta = read_model_meta(path)
        except ModelError as exc:
            if record and (damaged_file := record.listed(path, None)):
                raise damaged_file from exc
            raise
        if record and (damaged_file := record.listed(path, meta.checkpoint_sha256)):
            raise damaged_file
        one = Artifacts({meta.precision: (path, meta)})
        one.file = path
        return one
    if path.is_dir():
        folder = path / "export" if not list(path.glob("*.onnx")) and (path / "export").is_dir() else path
        return Artifacts(_folder_artifacts(folder, damaged))
    raise ModelError(f"model not found: {path}", "Pass an exported .onnx file or an export folder")


def _folder_artifacts(
    folder: Path, collect: list[ArtifactDamaged] | None
) -> dict[str, tuple[Path, ModelMeta]]:
    record, problem = read_report(folder)
    ours: list[tuple[Path, ModelMeta]] = []
    damaged: list[str] = []  # "NAME: why", of files the report does not record
    recorded_damage: list[ArtifactDamaged] = []
    for onnx in sorted(folder.glob("*.onnx")):
        try:
            meta = read_model_meta(onnx)
        except ModelError as exc:
            if record and (damaged_file := record.listed(onnx, None)):
                recorded_damage.append(damaged_file)
            elif ARTIFACT_NAME.match(onnx.name):  # named like an export's artifact: say it is broken
                damaged.append(f"{onnx.name}: {exc.message.replace(str(onnx), 'it')}")
            # other ONNX files (the search graph dump, a user's model) are not ours: no word needed
            continue
        if record and (damaged_file := record.listed(onnx, meta.checkpoint_sha256)):
            recorded_damage.append(damaged_file)
        else:
            ours.append((onnx, meta))
    if record and recorded_damage and (collect is None or not ours):
        raise combined(recorded_damage)
    if collect is not None:
        collect.extend(recorded_damage)
    if not ours:
        if damaged:
            raise ModelError(
                f"no usable invspread-edge model in {folder}: {'; '.join(damaged)}",
                f"Export again: invedge export RUN_DIR --out {folder} --overwrite",
            )
        raise ModelError(
            f"no invspread-edge model (.onnx with our metadata) in {folder}",
            "Export one with 'invedge export RUN_DIR'",
        )
    for line in damaged:
        console.warn(f"{folder}: skipping {line}; the other models are used")
    ours = _one_checkpoint(folder, ours, record, problem)
    found: dict[str, tuple[Path, ModelMeta]] = {}
    for onnx, meta in ours:
        # two files of one checkpoint and precision: the export's own name wins, else the first
        if meta.precision in found and onnx.name != ARTIFACT_FILES.get(meta.precision):
            continue
        found[meta.precision] = (onnx, meta)
    return found


def _one_checkpoint(
    folder: Path, ours: list[tuple[Path, ModelMeta]], record: ExportRecord | None, problem: str | None
) -> list[tuple[Path, ModelMeta]]:
    """The artifacts of the folder's one checkpoint (see `find_artifacts`); `record` and `problem`:
    what `integrity.read_report` made of its report.json."""
    by_checkpoint: dict[str, list[Path]] = {}
    for onnx, meta in ours:
        by_checkpoint.setdefault(meta.checkpoint_sha256, []).append(onnx)
    current = record.checkpoint_sha256 if record else None
    if len(by_checkpoint) == 1 and current in (None, *by_checkpoint):
        if problem:  # nothing to choose between, so the models' own metadata is enough
            console.warn(f"{folder / 'report.json'} {problem}; its models all come from one checkpoint")
        return ours
    fix = f"Delete the stale files, or export again: invedge export RUN_DIR --out {folder} --overwrite"
    groups = "; ".join(
        f"checkpoint {sha[:12]}…: {', '.join(p.name for p in paths)}" for sha, paths in by_checkpoint.items()
    )
    if current is None or current not in by_checkpoint:
        said = "" if current is None else f" (its report.json names checkpoint {current[:12]}…)"
        raise ModelError(f"{folder} mixes models of different checkpoints{said}: {groups}", fix)
    stale = [p.name for sha, paths in by_checkpoint.items() if sha != current for p in paths]
    console.warn(
        f"{folder}: ignoring {', '.join(stale)}: exported from another checkpoint than report.json's "
        f"({current[:12]}…). {fix}"
    )
    return [(onnx, meta) for onnx, meta in ours if meta.checkpoint_sha256 == current]


def pick_artifact(
    artifacts: dict[str, tuple[Path, ModelMeta]], backend: str, precision: str | None = None
) -> tuple[Path, ModelMeta]:
    """The artifact `backend` should run (see the module docstring); ModelError when none fits,
    ConfigError for a `precision` that is none of ours.

    The one chosen is compared with the sha256 its folder's report.json records (ArtifactDamaged):
    every caller that runs an artifact chooses it here first.
    """
    if precision is not None:
        if precision not in PRECISIONS:
            raise ConfigError(f"Invalid precision {precision!r}. Only {', '.join(PRECISIONS)} are supported.")
        if precision not in artifacts:
            raise _missing_precision(artifacts, precision)
        order: tuple[str, ...] = (precision,)
    else:
        order = PREFERENCE[backend]
    for wanted in order:
        if wanted in artifacts:
            if backend in ("trt", "ort-trt") and wanted == "int8-cpu":
                break
            path, meta = artifacts[wanted]
            check_artifact(path, meta.checkpoint_sha256)
            return path, meta
    if set(artifacts) == {"int8-cpu"} or (precision == "int8-cpu" and backend in ("trt", "ort-trt")):
        raise ModelError(
            "the int8-cpu model (uint8 activations) cannot run on TensorRT",
            "Use model.int8.onnx (symmetric INT8), fp16 or fp32 for TensorRT, or --backend ort-cpu",
        )
    raise ModelError(f"no artifact for {backend} among {', '.join(sorted(artifacts))}")


def _missing_precision(artifacts: dict[str, tuple[Path, ModelMeta]], precision: str) -> ModelError:
    """The error for a `precision` that `artifacts` lacks: of one file, the file is the wrong one (its
    folder may well hold the precision asked for); of a folder, the export lacks it."""
    file = getattr(artifacts, "file", None)
    if file is not None:
        (have,) = artifacts
        return ModelError(
            f"{file} is the {have} artifact; pass its export folder, or the {precision} file "
            f"({ARTIFACT_FILES[precision]})"
        )
    return ModelError(
        f"no {precision} artifact in {_folder(artifacts)} (found: {', '.join(sorted(artifacts))})",
        "Export it (invedge export RUN --int8 / --fp16) or choose another --precision",
    )


def _folder(artifacts: dict[str, tuple[Path, ModelMeta]]) -> str:
    """The export folder the artifacts were found in, as messages name it."""
    folders = sorted({str(path.parent) for path, _meta in artifacts.values()})
    return ", ".join(folders) or "the export"


def backend_status() -> dict[str, str | None]:
    """backend → None when it looks usable here, else why not (cheap: nothing is loaded)."""
    from .ort import available_providers

    providers = available_providers()
    status: dict[str, str | None] = {}
    has_trt = importlib.util.find_spec("tensorrt") is not None
    status["trt"] = None if has_trt else "the tensorrt Python package is not installed"
    for name, provider in (
        ("ort-trt", "TensorrtExecutionProvider"),
        ("ort-cuda", "CUDAExecutionProvider"),
        ("ort-cpu", "CPUExecutionProvider"),
    ):
        if not providers:
            status[name] = "onnxruntime is not installed"
        else:
            status[name] = None if provider in providers else f"this onnxruntime has no {provider}"
    return status


def open_backend(
    model: str | os.PathLike[str] | None,
    backend: str = "auto",
    threads: int = 0,
    precision: str | None = None,
    max_batch: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device_id: int = 0,
    *,
    engine_path: str | os.PathLike[str] | None = None,
    trust_engine: bool = False,
    check: EngineCheck | None,
) -> Backend:
    """Open `model` (file or export folder) on `backend` ("auto" or one of BACKENDS).

    `check` judges an engine TensorRT builds on the way (native, or in ONNX Runtime's provider)
    before it is kept; the caller hands it in (`embedder.open_backend`: the probe check), None keeps
    it unchecked.

    `engine_path`: a TensorRT engine file to run instead of building one (native backend only);
    without its sidecar it is refused unless `trust_engine` (see tensorrt.load.load_engine).
    The metadata read here while choosing the artifact is the backend's `meta` (read once, from the
    ONNX file); its `notes` are lines saying what was chosen and why.

    A Triton server's model (`triton:URL`, as `model` or as `backend`: `on_triton`) runs there;
    `model` may then be None (`_open_triton`).
    """
    model, backend = on_triton(model, backend)
    if is_triton(backend):
        return _open_triton(backend, model, precision, engine_path)
    if backend not in BACKEND_CHOICES:
        raise ConfigError(
            f"Invalid backend {shown(backend)!r}. Only {', '.join(BACKEND_CHOICES)} or {TRITON_CHOICE} "
            "are supported."
        )
    if model is None:
        raise ConfigError("no model to run", f"Pass an exported model or export folder, or {TRITON_CHOICE}")
    if engine_path is not None and backend not in ("auto", "trt"):
        raise ConfigError(
            f"an engine file runs on the native TensorRT backend, not {backend}", "Use --backend trt"
        )
    artifacts = find_artifacts(model)
    status = backend_status()
    candidates = BACKENDS if backend == "auto" else (backend,)
    if engine_path is not None:
        candidates = ("trt",)
    notes: list[str] = []
    for name in candidates:
        if backend == "auto" and status[name] is not None:
            notes.append(f"{name}: skipped ({status[name]})")
            continue
        try:
            path, meta = pick_artifact(artifacts, name, precision)
            opened = _open(
                name, path, meta, threads, max_batch, cache_dir, device_id, engine_path, trust_engine, check
            )
        except (InvedgeError, RuntimeError, OSError) as exc:
            if (
                backend != "auto"
                or isinstance(exc, (ArtifactDamaged, ConfigError))  # a bad --precision: no backend helps
                or (isinstance(exc, ModelError) and name == "ort-cpu")
            ):
                raise
            notes.append(f"{name}: skipped ({exc})")
            continue
        picked = "auto-selected" if backend == "auto" else "as asked"
        notes.append(f"{name}: {path.name} ({meta.precision}) on {opened.info.device}, {picked}")
        opened.notes = tuple(notes)
        return opened
    raise EngineError("no backend could run this model:\n  " + "\n  ".join(notes))


def on_triton(
    model: str | os.PathLike[str] | None, backend: str
) -> tuple[str | os.PathLike[str] | None, str]:
    """(model, backend) as they are run: a MODEL `triton:URL` is that server's model, so no local
    model and that Triton backend. The one place where the two spellings of a Triton server meet
    (MODEL `triton:URL`, `--backend triton:URL`); a MODEL `triton:URL` with another backend is refused."""
    if not is_triton(model):
        return model, backend
    if backend not in (DEFAULT_BACKEND, model):
        raise ConfigError(
            f"the model {shown(model)} runs on its Triton server, not on --backend {shown(backend)}",
            "Leave --backend out: a triton:URL model needs none",
        )
    return None, str(model)


def _open_triton(
    backend: str,
    model: str | os.PathLike[str] | None,
    precision: str | None,
    engine_path: str | os.PathLike[str] | None,
) -> Backend:
    """The Triton server's model; a local `model` given too must embed into the same space (it is
    not run: a gallery's model, or the one a command was handed, checked against the server's)."""
    from .triton import TritonBackend

    if engine_path is not None:
        raise ConfigError(
            "an engine file runs on the native TensorRT backend, not on a Triton server", "Use --backend trt"
        )
    opened = TritonBackend(backend)
    try:
        if precision is not None and precision != opened.meta.precision:
            raise ConfigError(
                f"the Triton model is {opened.meta.precision}, not {precision}: "
                "--precision chooses among a local export's artifacts",
                "Drop --precision, or serve that artifact",
            )
        if model is not None:
            try:
                local = next(iter(find_artifacts(model).values()))[1]
            except ModelError as exc:
                raise ModelError(
                    exc.message,
                    "With a Triton backend, the local model given is the export the server's repository "
                    "was written from (its embedding space is checked against the server's): pass that",
                ) from exc
            if local.space_id != opened.meta.space_id:
                raise ModelError(
                    f"{model} embeds into space {local.space_id}, the Triton model at "
                    f"{opened.info.model_path} into {opened.meta.space_id}: they are different models",
                    "Pass triton:URL as the model (no local export needed), or serve the same export",
                )
    except BaseException:
        opened.close()
        raise
    return opened


def _open(
    name: str,
    path: Path,
    meta: ModelMeta,
    threads: int,
    max_batch: int | None,
    cache_dir: str | os.PathLike[str] | None,
    device_id: int,
    engine_path: str | os.PathLike[str] | None,
    trust_engine: bool,
    check: EngineCheck | None,
) -> Backend:
    if name == "trt":
        try:
            from .trt import TensorRTBackend  # the native backend; needs tensorrt + cuda-python
        except ImportError as exc:
            raise MissingDependency(
                "tensorrt",
                "The native TensorRT backend",
                "install JetPack's or NVIDIA's TensorRT Python bindings",
            ) from exc
        return TensorRTBackend(
            path,
            meta.precision,
            max_batch or DEFAULT_MAX_BATCH,
            cache_dir,
            engine_path=engine_path,
            trust_engine=trust_engine,
            meta=meta,
            check=check,
        )
    from .ort import OrtBackend

    return OrtBackend(
        path,
        name,
        threads=threads,
        device_id=device_id,
        max_batch=max_batch,
        cache_dir=cache_dir,
        meta=meta,
        check=check,
    )
