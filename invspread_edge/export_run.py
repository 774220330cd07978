"""A run's checkpoint exported: the toolkit's side of `invedge export`.

The export package never imports the toolkit, so the checkpoint is loaded here and handed to
`invspread_edge_export.pipeline.export_model` with its metadata and where it came from.
"""

from __future__ import annotations

from pathlib import Path

from invspread_edge_export.export_folder import check_out_folder
from invspread_edge_export.meta import meta_from_config
from invspread_edge_export.pipeline import ExportOptions, Log, export_model
from invspread_edge_export.report import ExportReport

from .checkpoint import build_model, load_checkpoint


def default_out(run: Path) -> Path:
    """Where a run's export goes without --out: RUN/export, beside its checkpoint."""
    return (run.parent if run.is_file() else run) / "export"


def export_run(
    run: Path,
    options: ExportOptions,
    *,
    out_chosen: bool = True,
    data: str | None = None,
    log: Log = lambda message: None,
) -> ExportReport:
    """Export the model of `run` (a run folder or its checkpoint file) into `options.out_dir`.

    Every option, the output folder and TensorRT are checked before the checkpoint loads.
    `out_chosen`: `options.out_dir` was chosen by the caller (--out), not `default_out(run)`; only
    a chosen folder must be an export folder (not a run, embeddings or images folder).
    `data`: the images of the parity and accuracy checks (None: the run's own).
    """
    options.check()
    if out_chosen:
        check_out_folder(options.out_dir, default_out(run))
    options.check_engine()
    ckpt = load_checkpoint(run)
    meta = meta_from_config(ckpt.config, ckpt.sha256)
    checkpoint = {"path": str(ckpt.path), "sha256": ckpt.sha256, "epoch": ckpt.epoch, "arch": meta.arch}
    source = data or str(ckpt.config.get("data", "fashion-mnist"))
    return export_model(build_model(ckpt), meta, options, data=source, checkpoint=checkpoint, log=log)
