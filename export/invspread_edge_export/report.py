"""What an export produced, as a table for people and `report.json` for machines.

Every artifact: file, size, sha256, seconds taken, parity and accuracy figures; the calibration
used; the probe manifest's sha256; and the exact commands to run next. The runtime compares the
files with these sizes and hashes before it runs them (invspread_edge_runtime/integrity.py).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from invspread_edge_runtime.files import atomic_write_json, human_size
from invspread_edge_runtime.integrity import REPORT_NAME

from .accuracy_check import AccuracyResult
from .parity import ParityResult

REPORT_FORMAT = "invspread-edge/export-report/1"


@dataclass
class Artifact:
    precision: str
    path: Path
    bytes: int
    sha256: str
    seconds: float
    parity: ParityResult | None = None
    accuracy: AccuracyResult | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "file": self.path.name,
            "bytes": self.bytes,
            "size": human_size(self.bytes),
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
            "parity": None if self.parity is None else self.parity.to_dict(),
            "accuracy": None if self.accuracy is None else self.accuracy.to_dict(),
            "notes": self.notes,
        }


@dataclass
class ExportReport:
    out_dir: Path
    checkpoint: dict[str, Any]
    meta: dict[str, str]
    artifacts: list[Artifact] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    engines: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    earlier: list[dict[str, Any]] = field(default_factory=list)  # kept from an earlier export
    probes: dict[str, str] | None = None  # {"manifest": "probes/probes.json", "sha256": ...}

    def artifact(self, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.precision == precision), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "out_dir": str(self.out_dir),
            "checkpoint": self.checkpoint,
            "metadata": self.meta,
            "artifacts": [a.to_dict() for a in self.artifacts] + self.earlier,
            "calibration": self.calibration,
            "engines": self.engines,
            "probes": self.probes,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
            "next": next_commands(self),
        }

    def write(self) -> Path:
        path = self.out_dir / REPORT_NAME
        atomic_write_json(path, self.to_dict())
        return path


def next_commands(report: ExportReport) -> list[str]:
    """What to run with the artifacts: embed a folder, build and search an index, benchmark."""
    out = _shell_path(report.out_dir)
    commands = [
        f"invedge embed {out} IMAGES_DIR --out gallery.emb   # picks the artifact that suits the backend",
        "invedge index build gallery.emb --out gallery.index",
        "invedge search gallery.index QUERY.jpg --k 5",
        f"invedge bench {out}",
    ]
    if report.artifact("int8") or report.artifact("fp16"):
        gpu = f"{out}/model.int8.onnx" if report.artifact("int8") else f"{out}/model.fp16.onnx"
        commands.append(f"invedge build-engine {gpu} --max-batch 64   # on the Jetson/GPU that will serve it")
    return commands


def _shell_path(path: Path) -> str:
    try:
        shown = os.path.relpath(path)
        if shown.startswith(".."):
            shown = str(path)
    except ValueError:  # another drive (Windows)
        shown = str(path)
    return shlex.quote(shown)
