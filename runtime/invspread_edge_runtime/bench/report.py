"""The benchmark's outputs: the rich table, --json records, a markdown table and a latency plot."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from ..files import atomic_path, atomic_write_json, atomic_write_text
from .environment import summary_lines
from .runner import OK, BenchReport, BenchRow

# (header, row → text) for the table and the markdown, in order.
Column = tuple[str, Callable[[BenchRow], str]]


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _status(row: BenchRow) -> str:
    if row.status == OK:
        return "ok"
    return f"{row.status}: {row.reason or row.error}"


COLUMNS: list[Column] = [
    ("runtime", lambda r: r.runtime),
    ("precision", lambda r: r.precision or "—"),
    ("batch", lambda r: "—" if r.batch is None else str(r.batch)),
    ("status", _status),
    ("cold start ms", lambda r: _ms(r.cold_start_ms)),
    ("p50 ms", lambda r: _ms(r.p50_ms)),
    ("p90 ms", lambda r: _ms(r.p90_ms)),
    ("p99 ms", lambda r: _ms(r.p99_ms)),
    ("mean ± std ms", lambda r: "—" if r.mean_ms is None else f"{_ms(r.mean_ms)} ± {_ms(r.std_ms)}"),
    ("e2e p50 ms", lambda r: _ms(r.e2e_p50_ms)),
    ("device p50 ms", lambda r: _ms(r.device_p50_ms)),
    ("img/s", lambda r: _num(r.throughput_ips, ",.0f")),
    ("size MB", lambda r: _num(r.size_mb, ".2f")),
    (
        "cos mean / min",
        lambda r: "—" if r.cosine_mean is None else f"{r.cosine_mean:.6f} / {r.cosine_min:.6f}",
    ),
    ("top-1 agree", lambda r: _num(r.top1_agreement, ".3f")),
    ("kNN acc", lambda r: _num(r.knn_acc, ".3f")),
    ("R@1", lambda r: _num(r.recall_at_1, ".3f")),
    ("verify", lambda r: r.verify or "—"),  # probe check vs FP32: pass/fail + mean cosine
]


COMPACT_DROP = ("p90 ms", "mean ± std ms", "e2e p50 ms", "size MB", "R@1")


def rich_table(report: BenchReport, compact: bool = False) -> Table:
    """The screen table: short cells; why a row is not present or failed goes to `note_lines`.

    `compact` drops p90, mean ± std, e2e and size for narrow terminals (--json/--md keep everything).
    """
    notes = row_notes(report)

    def status(r: BenchRow) -> str:
        return r.status if r.status == OK else f"{r.status} [{notes[_note(r)]}]"

    columns: list[Column] = []
    for header, fn in COLUMNS:
        if header == "status":
            fn = status
        elif header == "cos mean / min":
            header, fn = "cos min", _cos_min
        elif header == "device p50 ms" and all(r.device_p50_ms is None for r in report.rows):
            continue
        if compact and header in COMPACT_DROP:
            continue
        columns.append((header, fn))
    table = Table(title="invedge bench", title_justify="left")
    for header, _ in columns:
        numeric = header not in ("runtime", "precision", "status")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for row in report.rows:
        style = None if row.status == OK else ("red" if row.status == "failed" else "dim")
        table.add_row(*(fn(row) for _, fn in columns), style=style)
    return table


def row_notes(report: BenchReport) -> dict[str, int]:
    """Each distinct 'not present'/'failed' explanation, numbered in order of appearance."""
    notes: dict[str, int] = {}
    for row in report.rows:
        if row.status != OK:
            notes.setdefault(_note(row), len(notes) + 1)
    return notes


def note_lines(report: BenchReport) -> list[str]:
    return [f"[{n}] {text}" for text, n in row_notes(report).items()]


def _note(row: BenchRow) -> str:
    return f"{row.runtime}: {row.reason or row.error}"


def _cos_min(row: BenchRow) -> str:
    return _num(row.cosine_min, ".6f")


def footer_lines(report: BenchReport) -> list[str]:
    """What the numbers mean and how they were made: environment, threads, timing, reference."""
    s = report.settings
    lines = summary_lines(report.environment) if report.environment else []
    lines.append(s["threads_line"])
    lines.append(
        f"images: {s['images']} from {s['data']} (the same for every runtime); timing: {s['timing']}"
    )
    lines.append(s["latency"])
    if s.get("reference"):
        lines.append(
            f"accuracy: cosine and top-1 agreement against {s['reference']}; {s.get('knn', 'no labels')}"
        )
    return lines


def fastest(rows: list[BenchRow]) -> BenchRow | None:
    """The highest-throughput ONNX row at the largest batch measured (torch rows cannot embed)."""
    measured = [
        r for r in rows if r.status == "ok" and r.throughput_ips and not r.runtime.startswith("torch")
    ]
    if not measured:
        return None
    top_batch = max(r.batch for r in measured if r.batch is not None)
    return max((r for r in measured if r.batch == top_batch), key=lambda r: r.throughput_ips or 0.0)


def markdown(report: BenchReport) -> str:
    """A table to paste into a README or an issue, with the settings underneath."""
    headers = [h for h, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in report.rows:
        cells = [fn(row).replace("|", "\\|") for _, fn in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"- {line}" for line in footer_lines(report))
    return "\n".join(lines) + "\n"


def write_json(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    atomic_write_json(path, _jsonable(report.records()))
    return Path(path)


def write_markdown(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    atomic_write_text(path, markdown(report))
    return Path(path)


def _jsonable(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# --- plot -------------------------------------------------------------------------------------------


def plot_series(report: BenchReport) -> dict[str, list[tuple[int, float]]]:
    """'runtime precision' → [(batch, p50 ms)] of the rows that ran, sorted by batch."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in report.rows:
        if row.status == OK and row.batch is not None and row.p50_ms is not None:
            series.setdefault(f"{row.runtime} {row.precision}", []).append((row.batch, row.p50_ms))
    return {k: sorted(v) for k, v in series.items()}


def write_plot(report: BenchReport, path: str | os.PathLike[str], engine: str = "auto") -> Path:
    """Latency (p50) against batch size, one line per runtime × precision, log-log; PNG.

    matplotlib where importable, else a plain chart drawn with Pillow (`engine` forces one).
    """
    series = plot_series(report)
    path = Path(path)
    if engine == "auto":
        import importlib.util

        engine = "matplotlib" if importlib.util.find_spec("matplotlib") else "pillow"
    with atomic_path(path) as tmp:
        if engine == "matplotlib":
            _plot_matplotlib(series, tmp, report)
        else:
            _plot_pillow(series, tmp)
    return path


def _plot_matplotlib(series: dict[str, list[tuple[int, float]]], out: Path, report: BenchReport) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.add_subplot()
    for label, points in series.items():
        ax.plot([b for b, _ in points], [ms for _, ms in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    batches = sorted({b for points in series.values() for b, _ in points})
    if batches:
        ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per batch (ms)")
    gpu = (report.environment.get("gpu") or {}).get("name")
    cpu = (report.environment.get("cpu") or {}).get("model")
    ax.set_title(f"invedge bench — {gpu or cpu or 'this machine'}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png")


def _plot_pillow(series: dict[str, list[tuple[int, float]]], out: Path) -> None:
    import math

    from PIL import Image, ImageDraw

    width, height, margin = 800, 500, 60
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    points = [p for pts in series.values() for p in pts]
    draw.rectangle([margin, 20, width - 20, height - margin], outline="black")
    draw.text((margin, height - 25), "batch size (log2)  vs  p50 latency ms (log10)", fill="black")
    if points:
        xs = [math.log2(b) for b, _ in points]
        ys = [math.log10(max(ms, 1e-6)) for _, ms in points]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

        def at(batch: int, ms: float) -> tuple[float, float]:
            x = margin + (math.log2(batch) - x0) / (x1 - x0) * (width - margin - 40)
            y = height - margin - (math.log10(max(ms, 1e-6)) - y0) / (y1 - y0) * (height - margin - 40)
            return x, y

        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
        for i, (label, pts) in enumerate(series.items()):
            colour = palette[i % len(palette)]
            xy = [at(b, ms) for b, ms in pts]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for x, y in xy:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            draw.text((width - 200, 25 + 14 * i), label, fill=colour)
        for b in sorted({b for b, _ in points}):
            x, _ = at(b, 10**y0)
            draw.text((x - 5, height - margin + 5), str(b), fill="black")
        draw.text((5, 20), f"{10**y1:.3g}", fill="black")
        draw.text((5, height - margin - 10), f"{10**y0:.3g}", fill="black")
    img.save(out, format="PNG")
