"""`invedge verify EXPORT`: embed the export's probe set with a backend and compare with FP32."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import BACKENDS, JsonOpt, TrustEngineOpt

ORDER = ("fp32", "fp16", "int8", "int8-cpu")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)


def verify(
    export: Path = typer.Argument(
        ..., help="An export folder (or a run folder holding export/), or one of its .onnx files."
    ),
    backend: str = typer.Option(
        "auto", "--backend", "-b", help=f"One of: {', '.join(BACKENDS)} (auto: the one embed would pick)."
    ),
    precision: str | None = typer.Option(
        None, "--precision", "-p", help="One artifact: fp32, fp16, int8 or int8-cpu (default: every one)."
    ),
    engine: Path | None = typer.Option(
        None, "--engine", help="A TensorRT engine file to verify (backend trt; never rebuilt)."
    ),
    trust_engine: bool = TrustEngineOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Check that a backend and artifact embed like the FP32 model: mean/min cosine and top-1
    neighbour agreement on the probe set written at export, against thresholds per precision.

    Exit status 1 when any artifact fails. Examples: invedge verify runs/fmnist/export --backend trt ·
    invedge verify runs/fmnist/export --engine model.int8.engine
    """
    from .. import console
    from ..backends.select import find_artifacts, pick_artifact
    from ..errors import EngineError, InvedgeError
    from ..metadata import PRECISIONS
    from ..verify import VerifyFailed, load_probe_set, require_pass, suggestion, verify_backend

    if backend not in BACKENDS:
        raise InvedgeError(f"Invalid --backend {backend!r}. Only {', '.join(BACKENDS)} are supported")
    if precision is not None and precision not in PRECISIONS:
        raise InvedgeError(f"Invalid --precision {precision!r}. Only {', '.join(PRECISIONS)} are supported")
    if not export.exists():
        raise InvedgeError(f"export not found: {export}", "Pass an export folder written by 'invedge export'")
    probes = load_probe_set(export)  # damaged or missing probe files: one line, before any backend opens
    artifacts = find_artifacts(export if export.is_file() else probes.folder.parent)

    if engine is not None:
        if backend not in ("auto", "trt"):
            raise InvedgeError(
                f"--engine runs on the native TensorRT backend, not {backend}", "Drop --backend"
            )
        backend = "trt"
        precision = precision or _engine_precision(engine)
        if precision is None:
            raise EngineError(f"{engine} has no sidecar saying its precision", "Pass --precision")
    wanted = [precision] if precision else [p for p in ORDER if p in artifacts and _runs(backend, p)]
    if not wanted:
        raise InvedgeError(f"no artifact in {probes.folder.parent} runs on {backend}")

    results, errors = [], []
    for p in wanted:
        try:
            path, meta = pick_artifact(artifacts, "ort-cpu" if backend == "auto" else backend, p)
            with _open(path, backend, p, engine, trust_engine) as opened:
                results.append(verify_backend(opened, probes, meta, p))
        except VerifyFailed as exc:  # the engine's own check at build time failed: same figures
            results.append(exc.result)
        except InvedgeError as exc:
            if len(wanted) == 1:
                raise
            errors.append((p, str(exc)))
            console.warn(f"{p}: {exc}")

    if json_out:
        console.print_json(
            {
                "probes": str(probes.folder),
                "count": len(probes),
                "results": [r.to_dict() for r in results],
                "errors": [{"precision": p, "error": e} for p, e in errors],
            }
        )
    else:
        console.print_table(_table(results, probes), min_width=160)
        console.out.print(
            "mean/min cosine to the FP32 embeddings; top-1: probes whose nearest other probe agrees with FP32's "
            "(near-ties count as agreeing)",
            highlight=False,
        )
    failed = [r for r in results if not r.passed]
    if failed:
        first = failed[0]
        if len(failed) == 1:
            require_pass(first)
        names = ", ".join(f"{r.precision} on {r.backend}" for r in failed)
        raise VerifyFailed(
            first,
            f"{len(failed)} of {len(results)} artifacts fail their probe check ({names}); "
            f"{first.precision}: {first.summary()} ({'; '.join(first.failures)})",
            suggestion(first.precision),
        )
    if errors:
        raise InvedgeError(f"{len(errors)} artifact(s) could not be verified: {errors[0][0]}: {errors[0][1]}")
    console.success(f"{len(results)} artifact(s) embed like FP32 on {len(probes)} probes")


def _runs(backend: str, precision: str) -> bool:
    return not (backend in ("trt", "ort-trt") and precision == "int8-cpu")


def _open(path: Path, backend: str, precision: str, engine: Path | None, trust_engine: bool = False):
    from ..backends.select import open_backend

    if engine is not None:
        from ..backends.trt import TensorRTBackend

        return TensorRTBackend(path, engine_path=engine, trust_engine=trust_engine)
    return open_backend(path, backend, precision=precision)


def _engine_precision(engine: Path) -> str | None:
    from ..errors import EngineError
    from ..tensorrt.cache import read_sidecar

    if not engine.is_file():
        raise EngineError(f"engine file not found: {engine}")
    info = read_sidecar(engine)
    return None if info is None else info.key.precision


def _table(results, probes):
    from rich.table import Table

    table = Table(title=f"invedge verify: {len(probes)} probes in {probes.folder}", title_justify="left")
    headers = ("artifact", "precision", "backend", "mean cos", "min cos", "top-1", "needs", "result")
    for header in headers:
        right = header in ("mean cos", "min cos", "top-1")
        table.add_column(header, justify="right" if right else "left", no_wrap=header != "result")
    for r in results:
        t = r.thresholds
        mark = "[green]pass[/green]" if r.passed else f"[red]fail[/red]: {'; '.join(r.failures)}"
        table.add_row(
            r.model_file,
            r.precision,
            r.backend,
            f"{r.mean_cosine:.5f}",
            f"{r.min_cosine:.5f}",
            r.agreeing,
            f"≥ {t['mean_cosine']:g} / {t['min_cosine']:g} / {t['top1_agreement']:g}",
            mark,
        )
    return table
