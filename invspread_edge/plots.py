"""curves.png of a run: loss and kNN accuracy per epoch (matplotlib, Agg backend, no display)."""

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
        for i, (name, value) in enumerate((references or {}).items()):
            color = REFERENCE_COLORS[i % len(REFERENCE_COLORS)]
            ax_acc.axhline(100 * value, color=color, linestyle="--", linewidth=1)
            ax_acc.annotate(
                f"{name} {100 * value:.2f} %",
                (0.3, 100 * value),
                xycoords=("axes fraction", "data"),
                va="bottom",
                color=color,
                fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
            )
    if title:
        ax_loss.set_title(title)
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
