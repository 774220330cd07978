"""curves.png of a run (loss and kNN accuracy per epoch), and runs side by side against the clock
(matplotlib, Agg backend, no display)."""

from __future__ import annotations

import os
from typing import Any

from invspread_edge_runtime.files import atomic_path

REFERENCE_COLORS = ("tab:green", "tab:purple", "tab:brown", "tab:gray", "tab:olive")  # not the curves'


def plot_curves(
    metrics: list[dict[str, Any]],
    path: str | os.PathLike[str],
    title: str = "",
    references: dict[str, float] | None = None,
) -> None:
    """references: named accuracies (0–1), e.g. baselines, drawn as dashed lines on the kNN axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=100)
    ax_loss.plot(epochs, [m["loss"] for m in metrics], "o-", color="tab:blue", label="loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_ylabel("loss", color="tab:blue")
    knn = [(m["epoch"], 100 * m["knn_accuracy"]) for m in metrics if m.get("knn_accuracy") is not None]
    if knn:
        ax_acc = ax_loss.twinx()
        ax_acc.plot(*zip(*knn, strict=True), "s-", color="tab:red", label="kNN accuracy")
        ax_acc.set_ylabel("kNN accuracy (%)", color="tab:red")
        _reference_lines(ax_acc, references)
    _finish(fig, ax_loss, title, path)


def plot_knn_over_time(
    runs: dict[str, list[dict[str, Any]]],
    path: str | os.PathLike[str],
    title: str = "",
    references: dict[str, float] | None = None,
) -> None:
    """kNN accuracy of several runs against the minutes each had spent (training and its kNN
    monitor), so recipes with different epoch lengths compare at equal wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, metrics in runs.items():
        minutes, points = 0.0, []
        for m in metrics:
            minutes += (m["seconds"] + m.get("eval_seconds", 0)) / 60
            if m.get("knn_accuracy") is not None:
                points.append((minutes, 100 * m["knn_accuracy"]))
        if points:
            ax.plot(*zip(*points, strict=True), "s-", label=name)
    _reference_lines(ax, references)
    ax.set_xlabel("minutes (training and monitor)")
    ax.set_ylabel("kNN accuracy (%)")
    ax.legend(loc="lower right", fontsize=8)
    _finish(fig, ax, title, path)


def _reference_lines(ax: Any, references: dict[str, float] | None) -> None:
    """Named accuracies (0–1) as dashed, labelled lines on a percentage axis."""
    for i, (name, value) in enumerate((references or {}).items()):
        color = REFERENCE_COLORS[i % len(REFERENCE_COLORS)]
        ax.axhline(100 * value, color=color, linestyle="--", linewidth=1)
        ax.annotate(
            f"{name} {100 * value:.2f} %",
            (0.3, 100 * value),
            xycoords=("axes fraction", "data"),
            va="bottom",
            color=color,
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
        )


def _finish(fig: Any, ax: Any, title: str, path: str | os.PathLike[str]) -> None:
    """Title, grid, and the PNG written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
