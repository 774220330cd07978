"""`write_deepstream`: an export made ready for a DeepStream pipeline as a secondary GIE.

Into DIR: the folded graph (`model.deepstream[.fp16|.int8].onnx`, fold.py), the nvinfer config
(`config_infer_secondary_invedge.txt`, config.py), for INT8 the calibration cache nvinfer wants
(`calib.table`), a README and `invedge-deepstream.json` (what was written, from what, and the
check's figures; the probe example reads the embedding space from it).

Everything is made and checked in memory first (the folded graph against the original on ONNX
Runtime, `fold.check_fold`); a failing check writes nothing. DIR is never the export folder itself
(the variant would sit among the artifacts).

A folder is ours only when it holds our readable manifest, and only the files that manifest lists
(plus the engines nvinfer built beside our graphs) are ours. A non-empty DIR is refused without
`overwrite`. With it: a file of a name we would write that no manifest of ours lists is never
replaced (refused, named; a README.md of someone else's only moves ours to README.invedge.md);
other files are left alone. The order protects nvinfer from a stale engine: the engines and the old
manifest go first (the manifest replaced by one marked incomplete, which lists old and new files so
a rerun may clean up), then the new files, then the old precision's files, then the final manifest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, InvedgeError, ModelError
from ...files import atomic_write_bytes, atomic_write_json, leftovers, remove_leftovers
from ...locks import exclusive_lock
from ...metadata import ModelMeta
from .config import CALIB_NAME, CONFIG_NAME, Settings, calibration_cache, config_text, engine_file
from .fold import (
    FoldCheck,
    Normalisation,
    check_fold,
    check_pixels,
    fold,
    import_onnx,
    normalisation_for,
)

MANIFEST = "invedge-deepstream.json"
FORMAT = "invspread-edge/deepstream/1"
README = "README.md"
README_ASIDE = "README.invedge.md"  # ours, when the README.md in DIR is someone else's
PRECISIONS = ("fp32", "fp16", "int8")
ONNX_NAMES = {
    "fp32": "model.deepstream.onnx",
    "fp16": "model.deepstream.fp16.onnx",
    "int8": "model.deepstream.int8.onnx",
}
# what nvinfer serializes beside one of our graphs (config.engine_file)
ENGINE = re.compile(r"model\.deepstream(\.fp16|\.int8)?\.onnx_.+\.engine")
ANY_NAMES = (CONFIG_NAME, CALIB_NAME, MANIFEST, *ONNX_NAMES.values())  # what some precision writes
TRITON_CONFIG = "config.pbtxt"  # what makes a folder a model of a Triton repository


@dataclass
class DeepStreamResult:
    folder: Path
    precision: str
    source: Path
    files: list[str]
    settings: Settings
    normalisation: Normalisation
    check: FoldCheck
    removed: list[str] = field(default_factory=list)  # engines nvinfer had built from a replaced graph

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "precision": self.precision,
            "source": str(self.source),
            "files": self.files,
            "config": CONFIG_NAME,
            "engine_file": engine_file(ONNX_NAMES[self.precision], self.settings),
            "net_scale_factor": self.normalisation.net_scale_factor,
            "offsets": list(self.normalisation.offsets),
            "channel_scale": None
            if self.normalisation.channel_scale is None
            else list(self.normalisation.channel_scale),
            "check": self.check.to_json(),
            "removed_engines": self.removed,
        }


def check_target(
    out: Path, overwrite: bool, export: Path | None = None, names: tuple[str, ...] = ANY_NAMES
) -> None:
    """Refuse a DIR that would mix with an export, a non-empty one without `overwrite`, and one
    holding a file of a name in `names` (what will be written; by default what any precision
    writes) that no manifest of ours lists. Cheap: `invedge export --deepstream DIR` calls it
    before any export work. `export`: the export folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--deepstream target {out} is a file, not a folder", "Name a folder")
    model_folder = _model_folder(out, export)
    if model_folder is not None:
        raise ConfigError(
            f"{out} is {model_folder}: the DeepStream files would sit among its files",
            "Write them to a folder of their own"
            + (f", e.g. {export / 'deepstream'}" if export is not None else ""),
        )
    _check_not_triton(out)
    if not out.is_dir():
        return
    listed = listed_files(out)
    temporary = {p.name for p in leftovers(out, names)}  # a killed write's; removed under the lock
    held = sorted(p.name for p in out.iterdir() if p.name not in temporary)
    foreign = [n for n in held if not _ours(n, listed)]
    if held and not overwrite:
        what = ", ".join(foreign)[:200]
        raise ConfigError(
            f"{out} is not empty: it holds "
            + (
                f"files invedge did not write ({what})" if foreign else "an earlier DeepStream config of ours"
            ),
            "Pass --overwrite to replace our files in it (other files are left alone)",
        )
    clashes = [n for n in foreign if n in names or ENGINE.fullmatch(n)]
    if clashes:
        raise ConfigError(
            f"{out} holds {', '.join(clashes)[:200]}, which no invedge manifest there lists: "
            "not replaced, even with --overwrite",
            f"Move {'it' if len(clashes) == 1 else 'them'} out of the folder, or write to another one",
        )


def listed_files(folder: Path) -> list[str] | None:
    """The files our manifest in `folder` lists (complete or not), or None: no readable manifest
    of ours there, so nothing in the folder is ours."""
    from ...files import read_json

    try:
        data = read_json(folder / MANIFEST, "DeepStream manifest")
    except InvedgeError:
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), list):
        return None
    names = [str(n) for n in data["files"]]
    return [n for n in names if n == Path(n).name and n not in ("", ".", "..")]  # plain names only


def _ours(name: str, listed: list[str] | None) -> bool:
    """Ours: listed by our manifest (the manifest too), or an engine nvinfer built beside our graph."""
    return listed is not None and (name in listed or name == MANIFEST or bool(ENGINE.fullmatch(name)))


def _model_folder(out: Path, export: Path | None) -> str | None:
    """What `out` is when it is a model's folder ("the export folder", "the run folder ..."), else
    None. A run folder is the one `invedge export` writes its `export` folder into, or any folder
    holding a checkpoint (export_folder.check_out_folder's rule)."""
    if (out / "checkpoint.safetensors").is_file():
        return "a run folder (it holds checkpoint.safetensors)"
    if export is None:
        return None
    out, export = out.resolve(), export.resolve()
    if out == export:
        return "the export folder"
    if export.name == "export" and out == export.parent:
        return f"the run folder of the export folder {export}"
    return None


def _check_not_triton(out: Path) -> None:
    """Refuse `out` when it is a Triton model repository (our files would sit at its root) or lies
    anywhere inside one: every folder above it, made by this write or there already, is checked
    (Triton takes every folder of its repository for a model, so `repo/ds/sub` would add `ds`)."""
    hint = "Write them to a folder of their own, outside the repository"
    model = _triton_model(out)
    if model is not None:
        raise ConfigError(
            f"{out} is a Triton model repository (it holds {model.name}/{TRITON_CONFIG}): "
            "the DeepStream files would sit at its root",
            hint,
        )
    for folder in out.resolve().parents:
        model = _triton_model(folder)
        if model is not None:
            raise ConfigError(
                f"{out} is inside the Triton model repository {folder} (it holds "
                f"{model.name}/{TRITON_CONFIG}): Triton takes each folder of it for a model",
                hint,
            )


def _triton_model(folder: Path) -> Path | None:
    """A model folder of the Triton repository `folder` (one holding config.pbtxt), or None."""
    if not folder.is_dir():
        return None
    try:
        return next((p for p in sorted(folder.iterdir()) if (p / TRITON_CONFIG).is_file()), None)
    except OSError:
        return None


def write_deepstream(
    export: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: Settings,
    *,
    overwrite: bool = False,
) -> DeepStreamResult:
    """Write the DeepStream folder for `export` (an export or run folder, or one .onnx file) into `out`."""
    from ...backends.select import find_artifacts, pick_artifact

    out = Path(out)
    check_settings(settings)
    artifacts = find_artifacts(export)
    source, meta = pick_artifact(artifacts, "trt", settings.precision)
    onnx_name = ONNX_NAMES[meta.precision]
    settings = replace(settings, precision=meta.precision)
    check_settings(settings)  # the precision the export gave (--dla with an fp32-only export)
    names = _names(out, meta.precision)
    check_target(out, overwrite, source.parent, names)
    original = source.read_bytes()
    norm = normalisation_for(meta)
    folded, calib = _folded(original, meta, norm, source)
    check = check_fold(
        original,
        folded,
        meta,
        norm,
        check_pixels(meta.image_size, _probe_pixels(source, meta)),
        meta.precision,
    )
    contents = {onnx_name: folded, CONFIG_NAME: config_text(meta, norm, onnx_name, settings).encode()}
    if calib is not None:
        contents[CALIB_NAME] = calib.encode()
    readme_name = next(n for n in names if n in (README, README_ASIDE))
    contents[readme_name] = readme(meta, settings, onnx_name, norm).encode()
    result = DeepStreamResult(out, meta.precision, source, [*contents, MANIFEST], settings, norm, check)
    with exclusive_lock(out, "DeepStream folder"):
        check_target(out, overwrite, source.parent, _names(out, meta.precision))  # again, under the lock
        _replace_files(out, contents, result)
        atomic_write_json(out / MANIFEST, manifest(result, meta))
    return result


def _names(out: Path, precision: str) -> tuple[str, ...]:
    """The files a write of `precision` puts into `out` (our README beside someone else's)."""
    listed = listed_files(out) if out.is_dir() else None
    theirs = (out / README).exists() and not _ours(README, listed)
    names = [ONNX_NAMES[precision], CONFIG_NAME, README_ASIDE if theirs else README, MANIFEST]
    return (*names, CALIB_NAME) if precision == "int8" else tuple(names)


def _replace_files(out: Path, contents: dict[str, bytes], result: DeepStreamResult) -> None:
    """Under the lock: the stale engines and the old manifest go before anything new is written (a
    crash then leaves no engine beside a new graph, and an incomplete manifest that still owns the
    old files); then the new files; then the old files the new set does not have."""
    listed = listed_files(out) if out.is_dir() else None
    old = [] if listed is None else [n for n in listed if n != MANIFEST]
    remove_leftovers(out, [*old, *contents, MANIFEST])  # a killed write's temporary files
    if listed is not None:
        for path in sorted(out.iterdir()):
            if ENGINE.fullmatch(path.name):
                path.unlink(missing_ok=True)
                result.removed.append(path.name)
    files = sorted({*old, *contents, MANIFEST})
    atomic_write_json(out / MANIFEST, {"format": FORMAT, "complete": False, "files": files})
    for name, data in contents.items():
        atomic_write_bytes(out / name, data)
    for name in old:  # another precision's graph, config lines, calib.table of before
        if name not in contents:
            (out / name).unlink(missing_ok=True)


def check_settings(settings: Settings) -> None:
    """One-line errors for values nvinfer would take but we cannot serve."""
    from ...bounds import DLA_CORE, DS_BATCH, DS_CLASS_ID, DS_GIE_ID, DS_GPU_ID, DS_OPERATE_ON_GIE_ID

    if settings.precision is not None and settings.precision not in PRECISIONS:
        raise ConfigError(
            f"Invalid --precision {settings.precision!r}. Only {', '.join(PRECISIONS)} are supported",
            "DeepStream runs TensorRT: int8-cpu is the CPU layout",
        )
    DS_BATCH.check(settings.batch_size)
    DS_GPU_ID.check(settings.gpu_id)
    DS_GIE_ID.check(settings.gie_id)
    if settings.operate_on_gie_id is not None:
        DS_OPERATE_ON_GIE_ID.check(settings.operate_on_gie_id)
        if settings.operate_on_gie_id == settings.gie_id:
            raise ConfigError(
                f"--operate-on-gie-id {settings.operate_on_gie_id} is this GIE's own id (--gie-id)",
                "Give the primary detector's gie-unique-id",
            )
    for class_id in settings.operate_on_class_ids:
        DS_CLASS_ID.check(class_id)
    if settings.dla_core is not None:
        DLA_CORE.check(settings.dla_core)
        if settings.precision == "fp32":
            raise ConfigError(
                "--dla needs fp16 or int8: the DLA runs FP16 and INT8 only", "Add --precision fp16"
            )


def _folded(original: bytes, meta: ModelMeta, norm: Normalisation, source: Path) -> tuple[bytes, str | None]:
    onnx = import_onnx()
    model = onnx.load_from_string(original)
    folded = fold(model, meta, norm, source.name)
    calib = calibration_cache(folded, source.name) if meta.precision == "int8" else None
    return folded.SerializeToString(), calib


def _probe_pixels(source: Path, meta: ModelMeta) -> np.ndarray | None:
    """The export's probe images as (N, 3, S, S) uint8, when it has a readable probe set."""
    from ...preprocess import load_uint8
    from ...verify.probes import find_probe_set, load_probe_set

    if find_probe_set(source) is None:
        return None
    try:
        probes = load_probe_set(source)
        return load_uint8(list(probes.paths), meta.image_size)
    except InvedgeError:
        return None  # a damaged probe set is verify's to report; the colour images still check


def manifest(result: DeepStreamResult, meta: ModelMeta) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "complete": True,
        **{k: v for k, v in result.to_json().items() if k not in ("folder", "removed_engines")},
        "space_id": meta.space_id,
        "checkpoint_sha256": meta.checkpoint_sha256,
        "embedding_dim": meta.embedding_dim,
        "input_name": meta.input_name,
        "output_name": meta.output_name,
        "image_size": meta.image_size,
        "gie_unique_id": result.settings.gie_id,
        "batch_size": result.settings.batch_size,
    }


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a DeepStream folder (the probe example reads the space id from it)."""
    from ...files import read_json

    path = Path(folder) / MANIFEST
    data = read_json(path, "DeepStream manifest")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path} is not an invedge DeepStream manifest")
    if data.get("complete") is not True:
        raise ModelError(
            f"{path}: the folder was left half-written",
            "Run 'invedge deploy deepstream ... --overwrite' again",
        )
    return data


def readme(meta: ModelMeta, settings: Settings, onnx_name: str, norm: Normalisation) -> str:
    inputs = "nvinfer gives it net-scale-factor × (x − offsets) of RGB 0–255 pixels"
    if norm.channel_scale is None:
        graph = (
            f"{inputs}, which is all of our normalisation ((x/255 − mean) / std, one std for the three "
            "channels): the graph is the export's, only its metadata marks it as this variant."
        )
    else:
        scales = ", ".join(f"{s:.6g}" for s in norm.channel_scale)
        graph = (
            f"{inputs}, which is x/255 − mean per channel. The stds differ per channel, which nvinfer's "
            f"one scale cannot express, so the graph first multiplies each channel by 1/std ({scales})."
        )
    return f"""# DeepStream secondary GIE: invedge embeddings ({meta.arch}, space {meta.space_id})

Written by `invedge deploy deepstream`. Not run here: check it on your DeepStream machine.

- `{CONFIG_NAME}`: the nvinfer config (`config-file` of a `[secondary-gie*]` group of deepstream-app,
  or `config-file-path` of an `nvinfer` element after the tracker). Relative paths resolve from its folder.
- `{onnx_name}`: the model for nvinfer's preprocessing.
  {graph}
  It is not a model `invedge` runs (its metadata says so).
- `{engine_file(onnx_name, settings)}`: the TensorRT engine nvinfer builds on its first start (minutes)
  and reuses; delete it after changing the ONNX file, the batch size or the GPU.
{"- `" + CALIB_NAME + "`: present so nvinfer turns on TensorRT's INT8 mode (without it nvinfer builds FP16); TensorRT takes the scales from the Q/DQ graph and never reads this file's values." if settings.precision == "int8" else ""}
- `{MANIFEST}`: what was written and the check's figures.

Each object's embedding ({meta.embedding_dim} floats, layer `{meta.output_name}`) is attached as
NVDSINFER_TENSOR_OUTPUT_META user meta of its object (gie-unique-id {settings.gie_id}): see
examples/deepstream/probe.py in the invspread-edge repository for reading it into a gallery.

Preprocessing differs from `invedge embed` in one way nvinfer cannot avoid: it scales the whole object
box to {meta.image_size}×{meta.image_size} (maintain-aspect-ratio=0 stretches it; 1 letterboxes it),
where invedge resizes the shorter side and crops the centre; its bilinear scaling also does not
antialias when shrinking. Build the gallery from crops of the same pipeline for the closest match.
"""
