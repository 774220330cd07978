"""An export's artifacts checked against its probe set: `invedge verify`, and the export's own check.

    check = verify_export("runs/fmnist/export", backend="trt")   # every artifact TensorRT runs
    require_all_pass(check)                                      # VerifyFailed naming the failures

The probe set is `probes.py`'s, the figures and verdict `backend.py`'s; this module picks the
artifacts (or an engine file), opens each on the backend and collects the results.
`check_exported` is the export's last step: every artifact on ort-cpu, figures kept in probes.json.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import console
from ..backends.base import Backend
from ..errors import EngineError, InvedgeError
from ..integrity import ArtifactDamaged, combined
from ..metadata import ModelMeta
from .backend import VerifyFailed, VerifyResult, require_pass, suggestion, verify_backend
from .probes import Log, ProbeSet, load_probe_set, record_export_check


@dataclass
class ExportCheck:
    """The probe check of an export's artifacts on one backend (`verify_export`)."""

    probes: ProbeSet
    results: list[VerifyResult]
    errors: list[tuple[str, str]]  # (precision, why it could not be checked)
    damaged: list[ArtifactDamaged] = field(default_factory=list)  # differ from report.json's record


def verify_export(
    export: str | os.PathLike[str],
    backend: str = "auto",
    precision: str | None = None,
    engine: str | os.PathLike[str] | None = None,
    *,
    trust_engine: bool = False,
    warn: Log | None = None,
) -> ExportCheck:
    """Check an export's artifacts (every one `backend` runs, or the one of `precision`) against its
    probe set; `engine` checks that TensorRT engine file instead (native backend, never rebuilt).

    A failing artifact is a result, not an error (see `require_all_pass`); one that cannot be
    opened raises when it is the only one asked for, else is listed in `errors` and warned about.
    One that differs from what the folder's report.json records (truncated, a flipped byte) is
    listed in `damaged`, every one of them when no `precision` is asked for: a check that passes
    must mean the whole export is what was exported.
    """
    from ..backends.select import BACKEND_CHOICES, find_artifacts, pick_artifact
    from ..backends.triton import is_triton, shown
    from ..metadata import PRECISIONS

    if is_triton(backend):
        raise InvedgeError(
            "Triton is not available to verify: it checks an export's own artifacts on this machine",
            "Verify the export the server's repository was written from with a local backend "
            "(--backend auto)",
        )
    if backend not in BACKEND_CHOICES:
        raise InvedgeError(
            f"Invalid --backend {shown(backend)!r}. Only {', '.join(BACKEND_CHOICES)} are supported"
        )
    if precision is not None and precision not in PRECISIONS:
        raise InvedgeError(f"Invalid --precision {precision!r}. Only {', '.join(PRECISIONS)} are supported")
    export = Path(export)
    if not export.exists():
        raise InvedgeError(f"export not found: {export}", "Pass an export folder written by 'invedge export'")
    probes = load_probe_set(export)  # damaged or missing probe files: one line, before any backend opens
    damaged: list[ArtifactDamaged] = []
    artifacts = find_artifacts(export if export.is_file() else probes.folder.parent, damaged)
    warn = warn or console.warn
    if precision is not None:  # only the artifact asked for is checked: the others are named
        _refuse_if_asked(damaged, precision, warn)
        damaged = []
    if engine is not None:
        if backend not in ("auto", "trt"):
            raise InvedgeError(
                f"--engine runs on the native TensorRT backend, not {backend}", "Drop --backend"
            )
        backend = "trt"
        precision = precision or _engine_precision(Path(engine))
    wanted = [precision] if precision else [p for p in PRECISIONS if p in artifacts and _runs(backend, p)]
    if not wanted:
        raise InvedgeError(f"no artifact in {probes.folder.parent} runs on {backend}")
    check = ExportCheck(probes, [], [], damaged)
    for p in wanted:
        try:
            path, meta = pick_artifact(artifacts, "ort-cpu" if backend == "auto" else backend, p)
            with _open_for_check(path, meta, backend, p, engine, trust_engine) as opened:
                check.results.append(verify_backend(opened, probes, precision=p))
        except VerifyFailed as exc:  # the engine's own check at build time failed: same figures
            check.results.append(exc.result)
        except ArtifactDamaged as exc:  # its sha256 is not the one report.json records
            check.damaged.append(exc)
        except InvedgeError as exc:
            if len(wanted) == 1:
                raise
            check.errors.append((p, str(exc)))
            warn(f"{p}: {exc}")
    return check


def require_all_pass(check: ExportCheck) -> None:
    """ArtifactDamaged naming every damaged artifact; VerifyFailed naming every failing one;
    InvedgeError when some could not be checked."""
    if check.damaged:
        raise combined(check.damaged)
    failed = [r for r in check.results if not r.passed]
    if failed:
        first = failed[0]
        if len(failed) == 1:
            require_pass(first)
        names = ", ".join(f"{r.precision} on {r.backend}" for r in failed)
        raise VerifyFailed(
            first,
            f"{len(failed)} of {len(check.results)} artifacts fail their probe check ({names}); "
            f"{first.precision}: {first.summary()} ({'; '.join(first.failures)})",
            suggestion(first.precision),
        )
    if check.errors:
        (precision, error), n = check.errors[0], len(check.errors)
        raise InvedgeError(f"{n} artifact(s) could not be verified: {precision}: {error}")


def check_exported(
    out_dir: str | os.PathLike[str], artifacts: Sequence[str | os.PathLike[str]], log: Log = lambda m: None
) -> list[str]:
    """Verify each exported artifact on ort-cpu against the probe set and store the figures in
    probes.json (`export_check`); returns one warning per artifact that does not pass."""
    from ..embedder import open_backend

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
    record_export_check(probes, figures)
    return warnings


def _refuse_if_asked(damaged: list[ArtifactDamaged], precision: str, warn: Log) -> None:
    """Raise the damage of the artifact of `precision`; warn about the others (not checked)."""
    for d in damaged:
        if d.precision == precision:
            raise d
        warn(f"{d.message} (not checked: --precision {precision} asks for another artifact)")


def _runs(backend: str, precision: str) -> bool:
    return not (backend in ("trt", "ort-trt") and precision == "int8-cpu")


def _open_for_check(
    path: Path,
    meta: ModelMeta,
    backend: str,
    precision: str,
    engine: str | os.PathLike[str] | None,
    trust_engine: bool,
) -> Backend:
    from ..embedder import open_backend

    if engine is not None:
        from ..backends.trt import TensorRTBackend

        return TensorRTBackend(path, engine_path=engine, trust_engine=trust_engine, meta=meta, check=None)
    return open_backend(path, backend, precision=precision)


def _engine_precision(engine: Path) -> str:
    """The precision an engine file was built for, from its sidecar."""
    from ..tensorrt.cache import read_sidecar

    if not engine.is_file():
        raise EngineError(f"engine file not found: {engine}")
    info = read_sidecar(engine)
    if info is None:
        raise EngineError(f"{engine} has no sidecar saying its precision", "Pass --precision")
    return info.key.precision
