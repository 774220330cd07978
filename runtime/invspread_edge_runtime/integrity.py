"""An export folder's files against what its report.json records: a damaged artifact is named, never run.

`invedge export` writes report.json last; it records every artifact's size and sha256, and the
sha256 of the probe manifest (`probes/probes.json`, which holds the sha256 of every probe file).
A file is checked against that record where it is used:

- listing a folder (`backends.select.find_artifacts`): a recorded artifact of another size, or one
  that cannot be read as a model, is damaged (a stat: every artifact of the folder, every time);
- choosing one to run (`backends.select.pick_artifact`: every backend, `invedge verify`, Ray's plan)
  and building an engine from one (`tensorrt.build`): its sha256;
- reading the probe set (`verify.probes.load_probe_set`): the manifest's sha256.

A folder without a usable report.json (a bare model.onnx, a report of another checkpoint, an export
made before report.json recorded the probe manifest) is used as it is: there is nothing to compare with.

The sha256 is computed at every open, not cached: 2 ms for the demo's 2.9 MB model and 29 ms for a
45 MB ResNet-18 (width 64), where creating its ONNX Runtime CPU session takes 38 and 189 ms
(2 shared cores of an AMD EPYC). A cache keyed by size and mtime would miss an in-place edit that
restores the mtime, for a saving no command needs.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .files import sha256_file
from .metadata import PREFIX

REPORT_NAME = "report.json"  # what `invedge export` writes last
CHECKPOINT_KEY = PREFIX + "checkpoint_sha256"  # in report.json's "metadata": the ONNX files' metadata
CHECKPOINT_FILE = "checkpoint.safetensors"  # a run folder's (report.json names the file)
PROBE_MANIFEST = "probes/probes.json"  # report.json's "probes": {"manifest": this, "sha256": ...}


class ArtifactDamaged(ModelError):
    """A file of an export folder that differs from what its report.json records."""

    def __init__(self, path: Path, why: str, hint: str, precision: str | None = None) -> None:
        super().__init__(f"{path} is damaged: {why}", hint)
        self.path, self.why = path, why
        self.precision = precision


@dataclass(frozen=True)
class Recorded:
    """One artifact as report.json records it."""

    file: str
    bytes: int
    sha256: str
    precision: str | None


@dataclass(frozen=True)
class ExportRecord:
    """What an export folder's report.json says about the folder's files."""

    folder: Path
    checkpoint_sha256: str
    artifacts: dict[str, Recorded]  # file name → record
    probes_sha256: str | None
    run: str | None  # the run folder (or checkpoint file) the export was made from, when named

    def rebuild_hint(self) -> str:
        """The command that writes the folder again, with the artifacts it holds."""
        precisions = {r.precision for r in self.artifacts.values()}
        flags = [f for f, p in (("--int8", {"int8", "int8-cpu"}), ("--fp16", {"fp16"})) if precisions & p]
        run = shlex.quote(self.run) if self.run else "RUN_DIR"
        out = (
            []
            if self.run and (Path(self.run) / "export").resolve() == self.folder.resolve()  # the default
            else ["--out", shlex.quote(str(self.folder))]
        )
        return f"Rebuild it: invedge export {' '.join([run, *out, *flags, '--overwrite'])}"

    def damaged(self, path: Path, why: str) -> ArtifactDamaged:
        record = self.artifacts.get(path.name)
        return ArtifactDamaged(path, why, self.rebuild_hint(), record.precision if record else None)

    def listed(self, path: Path, checkpoint_sha256: str | None) -> ArtifactDamaged | None:
        """The damage of a recorded artifact that shows without reading it (its size), or None.

        `checkpoint_sha256`: the file's own metadata's (None: it cannot be read as a model). A
        readable file of another checkpoint is not the report's artifact: the stale-file rules of
        `backends.select` apply to it, not this one.
        """
        recorded = self.artifacts.get(path.name)
        if recorded is None or checkpoint_sha256 not in (None, self.checkpoint_sha256):
            return None
        try:
            size = path.stat().st_size
        except OSError as exc:
            return self.damaged(path, f"it cannot be read ({exc.strerror or exc})")
        if size != recorded.bytes:
            return self.damaged(
                path, f"{size:,} bytes, report.json records {recorded.bytes:,} (truncated or overwritten)"
            )
        if checkpoint_sha256 is None:
            return self.damaged(
                path, "it cannot be read as a model, though its size is what report.json records"
            )
        return None


def combined(found: list[ArtifactDamaged]) -> ArtifactDamaged:
    """One error for several damaged artifacts: the first, and the names of the others."""
    first, others = found[0], [d.path.name for d in found[1:]]
    if not others:
        return first
    verb = "is" if len(others) == 1 else "are"
    return ArtifactDamaged(
        first.path, f"{first.why}; so {verb} {', '.join(others)}", first.hint or "", first.precision
    )


def read_report(folder: str | os.PathLike[str]) -> tuple[ExportRecord | None, str | None]:
    """(the record of `folder`'s report.json, why there is none although the file is there).

    (None, None): no report.json. A report that cannot be read or names no checkpoint gives no
    record: its hashes cannot be trusted to describe this folder.
    """
    folder = Path(folder)
    report = folder / REPORT_NAME
    if not report.exists():
        return None, None
    if not report.is_file():  # a folder, a FIFO (reading it would wait forever), ...
        return None, "is not a regular file"
    try:
        doc = json.loads(report.read_text(encoding="utf-8"))
        sha = doc["metadata"][CHECKPOINT_KEY]
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"cannot be read ({exc.__class__.__name__})"
    except (KeyError, TypeError):
        return None, "does not name a checkpoint"
    if not isinstance(sha, str) or not sha:
        return None, "does not name a checkpoint"
    probes = doc.get("probes")
    checkpoint = doc.get("checkpoint")
    run = checkpoint.get("path") if isinstance(checkpoint, dict) else None
    return (
        ExportRecord(
            folder=folder,
            checkpoint_sha256=sha,
            artifacts=_artifacts(doc.get("artifacts")),
            probes_sha256=_sha(probes.get("sha256")) if isinstance(probes, dict) else None,
            run=_run_of(run) if isinstance(run, str) and run else None,
        ),
        None,
    )


def _run_of(checkpoint: str) -> str:
    """What `invedge export` takes to export `checkpoint` again: its run folder, or the file itself."""
    path = Path(checkpoint)
    return str(path.parent) if path.name == CHECKPOINT_FILE else str(path)


def _artifacts(entries: Any) -> dict[str, Recorded]:
    """The well-formed entries of report.json's "artifacts" (others are left out: not compared)."""
    found: dict[str, Recorded] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        name, size, sha = entry.get("file"), entry.get("bytes"), _sha(entry.get("sha256"))
        if isinstance(name, str) and Path(name).name == name and isinstance(size, int) and sha:
            precision = entry.get("precision")
            found[name] = Recorded(name, size, sha, precision if isinstance(precision, str) else None)
    return found


def _sha(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) == 64 else None


def check_artifact(path: str | os.PathLike[str], checkpoint_sha256: str) -> None:
    """Raise ArtifactDamaged when report.json beside `path` records it with another size or sha256.

    `checkpoint_sha256`: the file's metadata's (a file of another checkpoint is not the report's).
    """
    path = Path(path)
    record, _ = read_report(path.parent)
    if record is None or path.name not in record.artifacts or checkpoint_sha256 != record.checkpoint_sha256:
        return
    if damaged := record.listed(path, checkpoint_sha256):
        raise damaged
    expected = record.artifacts[path.name].sha256
    if (sha := sha256_file(path)) != expected:
        raise record.damaged(path, f"its sha256 is {sha[:12]}…, report.json records {expected[:12]}…")


def check_probe_manifest(export_folder: str | os.PathLike[str], manifest: Path) -> str | None:
    """Why the probe manifest differs from the sha256 report.json records (None: same, or not recorded)."""
    record, _ = read_report(export_folder)
    if record is None or record.probes_sha256 is None:
        return None
    sha = sha256_file(manifest)
    if sha == record.probes_sha256:
        return None
    return f"its sha256 is {sha[:12]}…, the export's report.json records {record.probes_sha256[:12]}…"
