"""What `invedge bench TARGET` measures: a run folder, an export folder, or one ONNX file.

Artifacts are grouped by the precision their metadata states (not by file name), so a renamed
file is still benchmarked as what it is. A run folder also offers its checkpoint, which the
torch runtimes of the full toolkit run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InvedgeError, ModelError
from ..metadata import ARTIFACT_FILES, ModelMeta, read_model_meta

CHECKPOINT_NAME = "checkpoint.safetensors"  # the run folder's checkpoint (invspread_edge.checkpoint)
EXPORT_DIR = "export"
EXPORT_FLAGS = {"fp32": "", "fp16": " --fp16", "int8": " --int8", "int8-cpu": " --int8"}


@dataclass(frozen=True)
class BenchTarget:
    """The models of one embedding space: ONNX artifacts by precision, and the checkpoint if known."""

    source: Path
    meta: ModelMeta  # the metadata of the first artifact (preprocessing is the same for all)
    artifacts: dict[str, Path]  # precision → .onnx: what is benchmarked
    reference: Path | None = None  # the FP32 model that accuracy is measured against
    run_dir: Path | None = None
    checkpoint: Path | None = None

    @property
    def kind(self) -> str:
        if self.run_dir is not None:
            return "run folder"
        return "ONNX file" if self.source.suffix == ".onnx" else "export folder"

    def missing_artifact_reason(self, precision: str) -> str:
        name = ARTIFACT_FILES.get(precision, f"a {precision} model")
        where = self.source.parent if self.source.suffix == ".onnx" else self.source
        run = self.run_dir or "RUN_DIR"
        return f"no {precision} artifact ({name}) in {where}; make it with 'invedge export {run}{EXPORT_FLAGS.get(precision, '')}'"


def resolve_target(path: str | os.PathLike[str]) -> BenchTarget:
    """Find the artifacts to benchmark; raise a one-line error when there are none."""
    from ..backends.triton import is_triton

    # a remote model: its latency is the server's and the network's, not a runtime's of this machine
    if is_triton(os.fspath(path)):
        raise ConfigError(
            "invedge bench measures the runtimes of this machine; a model on a Triton server is not one of them",
            "Bench the export the repository was written from, or measure the server with Triton's perf_analyzer",
        )
    path = Path(path).expanduser()
    if not path.exists():
        raise InvedgeError(
            f"bench target not found: {path}", "Pass a run folder, an export folder or an .onnx file"
        )
    run_dir = checkpoint = None
    if path.is_file():
        if path.suffix != ".onnx":
            raise ModelError(
                f"{path} is not an ONNX model", "Pass a run folder, an export folder or an .onnx file"
            )
        files = [path]
        # A single non-FP32 file is compared against its FP32 sibling when one exists in the same space.
        sibling = path.parent / ARTIFACT_FILES["fp32"]
        siblings = [sibling] if sibling.is_file() and sibling != path else []
    else:
        if (path / CHECKPOINT_NAME).is_file():
            run_dir, checkpoint = path, path / CHECKPOINT_NAME
        folder = path / EXPORT_DIR if (path / EXPORT_DIR).is_dir() else path
        files = sorted(folder.glob("*.onnx"))
        siblings = []
        if not files:
            if run_dir is None:
                raise ModelError(f"no .onnx model in {folder}", "Export one with 'invedge export RUN_DIR'")
            hint = f"Export it first: 'invedge export {run_dir}'"
            raise ModelError(f"run folder {run_dir} has no exported model in {folder}", hint)
    artifacts: dict[str, Path] = {}
    first_meta: ModelMeta | None = None
    for file in files:
        meta = read_model_meta(file)  # a foreign .onnx raises ModelError with the fix
        if first_meta is None:
            first_meta = meta
        elif meta.space_id != first_meta.space_id:
            raise ModelError(
                f"{file.name} comes from another checkpoint than {files[0].name}",
                "Keep one model's exports per folder, or pass one .onnx file",
            )
        if meta.precision in artifacts:
            continue  # e.g. a stray copy: the first one (sorted by name) wins
        artifacts[meta.precision] = file
    assert first_meta is not None
    reference = artifacts.get("fp32")
    for file in siblings:
        try:
            meta = read_model_meta(file)
        except ModelError:
            continue
        if reference is None and meta.space_id == first_meta.space_id and meta.precision == "fp32":
            reference = file
    return BenchTarget(
        source=path,
        meta=first_meta,
        artifacts=artifacts,
        reference=reference,
        run_dir=run_dir,
        checkpoint=checkpoint,
    )
