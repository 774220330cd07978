"""benchmarks/video_embed.py at toy size (seconds), so that it cannot rot: every rate, the ratio and the
watch's latency figures in its JSON. The figures themselves are not checked: they are the machine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rtsp_testing import gst_available, skip_or_fail
from tiny import REPO

SCRIPT = REPO / "benchmarks" / "video_embed.py"
pytestmark = pytest.mark.xdist_group("rtsp")  # its watch row starts an RTSP server, as the stream tests do


def test_toy_run_writes_every_rate_ratio_and_the_watch_latency(tiny_export, tmp_path):
    reason = gst_available()
    if reason is not None:
        skip_or_fail(reason)  # the watch row needs the RTSP server
    pytest.importorskip("av", reason="the video rows need PyAV: pip install './runtime[video]'")
    out = tmp_path / "video.json"
    argv = [
        sys.executable, str(SCRIPT), "--model", str(tiny_export), "--backend", "ort-cpu", "--frames", "40",
        "--size", "64", "--batch", "8", "--watch-seconds", "2", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["format"] == "invspread-edge/video-embed/1"
    assert report["model"] == {"path": str(tiny_export), "source": "given with --model"}
    assert report["video"] == {"frames": 40, "size": 64, "codec": "h264", "fps": 25}
    rates, ratios = report["frames_per_s"], report["ratios"]
    assert all(rates[k] > 0 for k in ("decode", "model", "embed"))
    # the report rounds rates to 0.1 frame/s and ratios to 3 decimals: a slow (loaded) run's small ratio
    # is then 1-2 % off in relative terms, so the rounding's own step is allowed too
    assert ratios["embed_vs_slower"] == pytest.approx(
        rates["embed"] / min(rates["decode"], rates["model"]), rel=0.01, abs=0.001
    )
    assert ratios["target"] == 0.8 and isinstance(ratios["met"], bool)
    watch = report["watch"]
    assert watch["matches"] > 0 and watch["stats"]["frames"] >= watch["matches"]
    for figures in (watch["arrival_to_match_ms"], watch["watch_latency_ms"]):
        assert 0 <= figures["p50"] <= figures["p95"]
    for words in (
        "decode (PyAV alone)",
        "model (Embedder.embed)",
        "of the slower stage",
        "frame arrival → match",
    ):
        assert words in proc.stdout, proc.stdout
