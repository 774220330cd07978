"""curves.png and the recipe's baseline figure: written atomically, reference lines on the kNN axis."""

from __future__ import annotations

import matplotlib.axes

from invspread_edge.plots import plot_curves, plot_knn_over_time

METRICS = [
    {"epoch": 1, "loss": 3.5},
    {"epoch": 2, "loss": 2.1, "knn_accuracy": 0.81},
    {"epoch": 3, "loss": 1.7, "knn_accuracy": 0.83},
]


def test_reference_lines_join_the_knn_axis(tmp_path, monkeypatch):
    drawn = []
    axhline = matplotlib.axes.Axes.axhline

    def spy(self, y=0, *args, **kwargs):
        drawn.append(y)
        return axhline(self, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", spy)
    plot_curves(METRICS, tmp_path / "c.png", "t", {"pixels": 0.7885, "target": 0.85})
    assert [round(y, 2) for y in drawn] == [78.85, 85.0]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]  # no temporary file left behind


def test_loss_only_run_has_no_knn_axis(tmp_path):
    plot_curves(METRICS[:1], tmp_path / "c.png", references={"pixels": 0.79})
    assert (tmp_path / "c.png").stat().st_size > 0


def test_runs_against_the_clock(tmp_path, monkeypatch):
    """Each run's kNN points sit at the minutes spent so far (training plus monitor)."""
    lines = []
    plot = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        lines.append((list(args[0]), list(args[1])))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    fast = [{"epoch": e, "loss": 1.0, "seconds": 60, "eval_seconds": 30, "knn_accuracy": 0.7 + e / 100}
            for e in (1, 2)]  # fmt: skip
    slow = [
        {"epoch": 1, "loss": 1.0, "seconds": 240},
        {"epoch": 2, "loss": 1.0, "seconds": 240, "knn_accuracy": 0.75},
    ]
    plot_knn_over_time({"fast": fast, "slow": slow}, tmp_path / "t.png", "t", {"pixels": 0.79})
    assert lines == [([1.5, 3.0], [71.0, 72.0]), ([8.0], [75.0])]
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
