"""`invedge bench`: latency, throughput and accuracy of one model across every runtime present."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..bench.harness import DEFAULT_WARMUP
from ..bench.images import DEFAULT_COUNT, DEFAULT_DATA
from ..bench.registry import ALL_PRECISIONS, BUILTIN_RUNTIMES, TOOLKIT_RUNTIMES
from ..bench.runner import DEFAULT_BATCHES
from ..bounds import BATCH, BENCH_IMAGES, BENCH_ITERS, BENCH_SECONDS, WARMUP_CALLS, WARMUP_SECONDS, helped
from .options import ThreadsOpt, writable_output


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    target: Path = typer.Argument(
        ..., help="A run folder (uses RUN/export/), an export folder, or one .onnx file.", show_default=False
    ),
    runtimes: str = typer.Option(
        "",
        "--runtimes",
        "-r",
        help=f"Comma list of {', '.join((*BUILTIN_RUNTIMES, *TOOLKIT_RUNTIMES))} (default: all).",
    ),
    precision: str = typer.Option(
        "",
        "--precision",
        "-p",
        help=f"Comma list of {', '.join(ALL_PRECISIONS)} (default: every artifact present).",
    ),
    batch: str = typer.Option(
        ",".join(map(str, DEFAULT_BATCHES)), "--batch", help=helped("Comma list of batch sizes.", BATCH)
    ),
    data: str = typer.Option(
        DEFAULT_DATA, "--data", help="fashion-mnist (its test split) or a folder of images."
    ),
    images: int = typer.Option(
        DEFAULT_COUNT,
        "--images",
        help=helped("Images to time with and to measure accuracy on.", BENCH_IMAGES),
    ),
    warmup: str = typer.Option(
        DEFAULT_WARMUP,
        "--warmup",
        metavar="N",
        help=f"Warm-up calls per row: a count (10) or a duration (2s); calls {WARMUP_CALLS.help}, "
        f"seconds {WARMUP_SECONDS.help}.",
    ),
    iters: int | None = typer.Option(
        None, "--iters", help=helped("Measured calls per row (instead of --seconds).", BENCH_ITERS)
    ),
    seconds: float | None = typer.Option(
        None, "--seconds", help=helped("Measure each row for this long (default: 3 s).", BENCH_SECONDS)
    ),
    threads: int = ThreadsOpt,
    accuracy: bool = typer.Option(
        True, "--accuracy/--no-accuracy", help="Measure cosine, top-1 agreement, kNN."
    ),
    json_path: str | None = typer.Option(
        None, "--json", metavar="PATH", help="Write the records as JSON to this file ('-': stdout)."
    ),
    md_path: Path | None = typer.Option(None, "--md", help="Write a markdown table to this file."),
    plot_path: Path | None = typer.Option(None, "--plot", help="Write a latency-vs-batch PNG to this file."),
) -> None:
    """Compare latency, throughput and accuracy across runtimes, precisions and batch sizes.

    Every runtime sees the same images, the same preprocessing and the same thread count.
    A runtime this machine lacks is listed with the reason.
    """
    from .. import console
    from ..bench.environment import busy_warning, collect_environment
    from ..bench.harness import TimingPlan
    from ..bench.images import check_count, load_bench_images
    from ..bench.runner import BenchSettings, run_bench
    from ..bench.target import resolve_target

    started = time.perf_counter()
    settings = BenchSettings(
        runtimes=_split(runtimes) or None,
        precisions=_split(precision) or None,
        batches=_batches(batch),
        threads=threads,
        accuracy=accuracy,
    )
    settings.check()
    check_count(images)
    settings.plan = TimingPlan.from_options(warmup, iters, seconds)
    # Every input and output is checked before the first line is printed and before minutes of timing.
    for option, path in (("--json", json_path), ("--md", md_path), ("--plot", plot_path)):
        if path is not None and str(path) != "-":
            writable_output(Path(path), option)
    bench_target = resolve_target(target)
    pics = load_bench_images(data, images)

    found = ", ".join(
        f"{p} ({bench_target.artifacts[p].name})" for p in ALL_PRECISIONS if p in bench_target.artifacts
    )
    console.info(f"bench {bench_target.kind} {bench_target.source}: {found}")
    if pics.skipped:
        console.warn(f"{pics.skipped} unreadable images skipped")
    console.info(f"{len(pics)} images from {pics.name}; {settings.plan.describe()} per row")
    environment = collect_environment()
    if busy := busy_warning(environment):
        console.warn(f"load {busy}")
    report = run_bench(bench_target, pics, settings, environment, log=console.info)
    _print_report(report, json_path, md_path, plot_path)
    _summary(report, started)


def _print_report(report, json_path: str | None, md_path: Path | None, plot_path: Path | None) -> None:
    """The table on the terminal (unless the JSON goes to stdout) and the files asked for."""
    from .. import console
    from ..bench.report import (
        footer_lines,
        note_lines,
        rich_table,
        write_json,
        write_markdown,
        write_plot,
    )
    from ..files import human_size

    to_stdout = json_path == "-"
    if not to_stdout:
        compact = console.out.is_terminal and console.out.width < 170
        console.print_table(rich_table(report, compact=compact), min_width=200)
        for line in [*note_lines(report), *footer_lines(report)]:
            console.out.print(line, highlight=False)
    written: list[Path] = []
    if json_path:
        if to_stdout:
            console.print_json(report.records())
        else:
            written.append(write_json(report, json_path))
    if md_path:
        written.append(write_markdown(report, md_path))
    if plot_path:
        written.append(write_plot(report, plot_path))
    for path in written:
        console.success(f"wrote {path} ({human_size(path.stat().st_size)})")


def _summary(report, started: float) -> None:
    """How many rows ran, and the fastest one as the next command; an error when none ran."""
    from .. import console
    from ..bench.report import fastest
    from ..errors import InvedgeError

    ok = sum(r.status == "ok" for r in report.rows)
    if not ok:  # the table says why for each row; a script must not read "nothing" as success
        asked = ", ".join(sorted({r.runtime for r in report.rows})) or "none"
        raise InvedgeError(
            f"nothing was measured: no row of {asked} could run here (the reason column says why)",
            "Choose a runtime this machine has, e.g. --runtimes ort-cpu",
        )
    console.info(f"{ok} of {len(report.rows)} rows measured in {time.perf_counter() - started:.1f} s")
    best = fastest(report.rows)
    if best is not None:
        model = best.model_file or "MODEL"
        console.info(
            f"fastest at batch {best.batch}: {best.runtime} {best.precision} ({best.throughput_ips:,.0f} img/s); "
            f"next: invedge embed {model} FOLDER --backend {best.runtime} --out photos.emb"
        )


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _batches(text: str) -> list[int]:
    from ..errors import InvedgeError

    try:
        values = [int(part) for part in _split(text)]
    except ValueError:
        values = []
    if not values:
        raise InvedgeError(f"Invalid --batch {text!r}. Use whole numbers from 1 to {BATCH.high}, e.g. 1,8,64")
    for value in values:
        BATCH.check(value)
    return sorted(set(values))
