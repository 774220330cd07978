"""How close `invedge embed VIDEO` stays to the slower of decoding and the model, and how soon
`invedge watch` reports a match on a live RTSP stream.

    python benchmarks/video_embed.py                                   # runs/demo/export, else a tiny model
    python benchmarks/video_embed.py --model runs/fmnist/export --frames 2000 --size 256 --json video.json
    python benchmarks/video_embed.py --frames 60 --size 64 --watch-seconds 3 --json /tmp/v.json   # toy size

The video: `--frames` Fashion-MNIST test images enlarged to `--size` pixels, one per frame, written
by PyAV as H.264 (crf 18, 25 frames/s, a key frame every second). Rows, frames/s, one process, the
same file and backend:
- decode: PyAV alone, every frame to an RGB array (frame threads, as the runtime's file source);
- model: `Embedder.embed` of the same frames already decoded (PIL images in memory, batch `--batch`);
- embed (end to end): `invedge embed MODEL video.mp4 --out …` run in this process (its CLI entry),
  the real job: decode, preprocessing and the model overlapped, frames.json and parts written.
- its frame loop: the same run's frames over the loop's own seconds (its manifest's: without opening
  the model and merging the parts, which a short video pays in full).
Ratio (the target): end to end over min(decode, model) ≥ 0.8; the shared-CPU bound
1 / (1/decode + 1/model) is shown too (both stages on the same cores, no overlap to gain: each alone
already uses every core, FFmpeg's frame threads and ONNX Runtime's).

Watch: tests/rtsp_server.py (GstRtspServer under /usr/bin/python3, loopback) serves a live H.264
stream looping 20 pictures at 25 frames/s; the gallery is those 20 pictures (`invedge embed` + `invedge
index build`); `run_watch` (what `invedge watch --threshold -1 --cooldown 0` runs) reads it for
`--watch-seconds`. Latency per match: from the frame's arrival (its time: the Unix time at which
it was decoded) to the match being handed to the printer, p50/p95. Network and decoder buffering
before the frame is decoded are not in it. Without GstRtspServer the watch row is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FORMAT = "invspread-edge/video-embed/1"
RATE_TARGET = 0.8  # end to end ≥ this × the slower of decode and model
FPS = 25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", type=Path, default=None, help="an export folder or model file (default: see top)"
    )
    p.add_argument("--backend", default="auto")
    p.add_argument("--frames", type=int, default=3000, help="frames in the video")
    p.add_argument("--size", type=int, default=256, help="side of the video's frames, pixels")
    p.add_argument("--batch", type=int, default=64, help="the model row's and the embed run's batch")
    p.add_argument("--watch-seconds", type=float, default=10.0, help="how long the watch reads (0: no watch)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.frames < 1 or args.size < 16 or args.size % 2 or args.batch < 1 or args.watch_seconds < 0:
        p.error("--frames and --batch must be at least 1, --size even and at least 16, --watch-seconds ≥ 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from serve_load import pick_model  # the one way benchmarks find or make a model

    with tempfile.TemporaryDirectory(prefix="video_embed-") as tmp:
        work = Path(tmp)
        model, source = pick_model(args.model, work)
        video = make_video(work / "video.mp4", args.frames, args.size)
        print(
            f"model: {model} ({source}); {args.frames:,} frames of {args.size} px H.264; {os.cpu_count()} CPUs"
        )
        rates = measure_rates(model, video, work, args)
        watch = measure_watch(model, work, args) if args.watch_seconds else {"skipped": "--watch-seconds 0"}
    report = make_report(args, model, source, rates, watch)
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


# --- the video and the three rates ---------------------------------------------------------------


def make_video(path: Path, frames: int, side: int) -> Path:
    """Fashion-MNIST test images enlarged to `side` px, one per frame, as H.264 at FPS."""
    import av
    import numpy as np
    from PIL import Image

    from invspread_edge_runtime.evaluation.datasets import open_dataset

    images = open_dataset("fashion-mnist", "test").images
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "g": str(FPS)}
        for i in range(frames):
            grey = Image.fromarray(images[i % len(images), 0]).resize((side, side), Image.BICUBIC)
            rgb = np.repeat(np.asarray(grey)[:, :, None], 3, axis=2)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def decode_all(video: Path) -> list[Any]:
    """Every frame of the file as an (H, W, 3) uint8 array, as the runtime's file source decodes it."""
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def measure_rates(model: Path, video: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image

    from invspread_edge_runtime.cli import create_app, run
    from invspread_edge_runtime.embedder import Embedder

    decode_all(video)  # warm the file cache and the codec
    start = time.perf_counter()
    arrays = decode_all(video)
    decode = len(arrays) / (time.perf_counter() - start)

    pictures = [Image.fromarray(a) for a in arrays]
    with Embedder(model, backend=args.backend, batch_size=args.batch) as emb:
        backend = emb.info.name
        emb.embed(pictures[: args.batch])  # warm-up (sessions, caches)
        start = time.perf_counter()
        emb.embed(pictures)
        model_rate = len(pictures) / (time.perf_counter() - start)
    del pictures, arrays

    argv = ["embed", str(model), str(video), "--out", str(work / "video.emb"), "--backend", args.backend]
    argv += ["--batch", str(args.batch)]
    start = time.perf_counter()
    code = run(create_app(), argv)
    end_to_end = args.frames / (time.perf_counter() - start)
    if code != 0:
        sys.exit(f"error: invedge {' '.join(argv)} exited {code}")
    manifest = json.loads((work / "video.emb" / "manifest.json").read_text())
    loop = manifest["count"] / manifest["seconds"]  # the frames' loop alone: no model opening, no merge
    return {"decode": decode, "model": model_rate, "embed": end_to_end, "loop": loop, "backend": backend}


# --- the watch on a live loopback stream ------------------------------------------------------------


def measure_watch(model: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """p50/p95 of frame arrival → match on the test RTSP server's live stream; or why it was skipped."""
    sys.path.insert(0, str(REPO / "tests"))
    import rtsp_testing

    reason = rtsp_testing.gst_available()
    if reason is not None:
        return {"skipped": f"no RTSP server: {reason} (make rtsp-deps)"}
    try:
        from invspread_edge_runtime.watch.run import WatchOptions, run_watch
        from invspread_edge_runtime.watch.settings import WatchSettings
    except ImportError as error:
        return {"skipped": f"invedge watch is not available: {error}"}
    from invspread_edge_runtime.evaluation.datasets import open_dataset
    from invspread_edge_runtime.sources.sampling import Sampling

    images = open_dataset("fashion-mnist", "test").images[:, 0]
    live = images[rtsp_testing.LIVE_FIRST : rtsp_testing.LIVE_FIRST + rtsp_testing.LIVE_FRAMES]
    index = build_gallery(model, live, work, args)
    server = rtsp_testing.RtspServer(folder=work, file_images=images[:FPS], live_images=live)
    server.prepare().start()
    latencies: list[float] = []
    internal: list[float] = []

    def on_match(match: Any) -> None:
        latencies.append((time.time() - match.frame.time) * 1000)
        internal.append(match.latency_ms)

    try:
        settings = WatchSettings(
            server.live_url, threshold=-1.0, cooldown=0.0, k=1, sampling=Sampling(duration=args.watch_seconds)
        )
        watched = run_watch(
            WatchOptions(model, settings, index=index, backend=args.backend), on_start=lambda _s: None,
            on_match=on_match,
        )  # fmt: skip
    finally:
        server.kill()
    if not latencies:
        return {"skipped": "the watch reported no match"}
    return {
        "matches": len(latencies),
        "stats": watched.stats.to_dict(),
        "arrival_to_match_ms": percentiles(latencies),
        "watch_latency_ms": percentiles(internal),  # what the watch itself reports per match
    }


def build_gallery(model: Path, pictures: Any, work: Path, args: argparse.Namespace) -> Path:
    """The live stream's pictures as a gallery index, made by `invedge embed` and `invedge index build`."""
    from PIL import Image

    from invspread_edge_runtime.cli import create_app, run

    sys.path.insert(0, str(REPO / "tests"))
    from rtsp_testing import picture

    folder = work / "gallery"
    folder.mkdir()
    for i, image in enumerate(pictures):
        Image.fromarray(picture(image)).save(folder / f"{i:03d}.png")
    steps = [
        ["embed", str(model), str(folder), "--out", str(work / "gallery.emb"), "--backend", args.backend],
        ["index", "build", str(work / "gallery.emb"), "--out", str(work / "gallery.index")],
    ]
    for argv in steps:
        if run(create_app(), argv) != 0:
            sys.exit(f"error: invedge {' '.join(argv)} failed")
    return work / "gallery.index"


def percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    return {
        "p50": round(float(np.percentile(values, 50)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
    }


# --- the report ------------------------------------------------------------------------------------


def make_report(
    args: argparse.Namespace, model: Path, source: str, rates: dict[str, Any], watch: dict[str, Any]
) -> dict[str, Any]:
    slower = min(rates["decode"], rates["model"])
    shared = 1 / (1 / rates["decode"] + 1 / rates["model"])
    ratio = rates["embed"] / slower
    return {
        "format": FORMAT,
        "model": {"path": str(model), "source": source},
        "backend": rates["backend"],
        "video": {"frames": args.frames, "size": args.size, "codec": "h264", "fps": FPS},
        "batch": args.batch,
        "cpus": os.cpu_count(),
        "frames_per_s": {k: round(rates[k], 1) for k in ("decode", "model", "embed", "loop")},
        "ratios": {
            "embed_vs_slower": round(ratio, 3),
            "slower": "decode" if rates["decode"] <= rates["model"] else "model",
            "embed_vs_shared_cpu_bound": round(rates["embed"] / shared, 3),
            "loop_vs_slower": round(rates["loop"] / slower, 3),
            "loop_vs_shared_cpu_bound": round(rates["loop"] / shared, 3),
            "target": RATE_TARGET,
            "met": ratio >= RATE_TARGET,
        },
        "watch": watch,
    }


def print_report(report: dict[str, Any]) -> None:
    rates, ratios = report["frames_per_s"], report["ratios"]
    labels = {
        "decode": "decode (PyAV alone)",
        "model": "model (Embedder.embed)",
        "embed": "invedge embed (end to end)",
        "loop": "  its frame loop (manifest)",
    }
    for key, label in labels.items():
        print(f"  {label:<28} {rates[key]:>10,.1f} frames/s")
    print(
        f"end to end = {ratios['embed_vs_slower']:.0%} of the slower stage ({ratios['slower']}), "
        f"{ratios['embed_vs_shared_cpu_bound']:.0%} of the shared-CPU bound; target ≥ {RATE_TARGET:.0%}: "
        f"{'met' if ratios['met'] else 'NOT met'}; its frame loop {ratios['loop_vs_slower']:.0%} and "
        f"{ratios['loop_vs_shared_cpu_bound']:.0%}"
    )
    watch = report["watch"]
    if "skipped" in watch:
        print(f"watch: skipped ({watch['skipped']})")
        return
    arrival, stats = watch["arrival_to_match_ms"], watch["stats"]
    print(
        f"watch (live RTSP, loopback): {watch['matches']} matches of {stats['frames']} frames "
        f"({stats['dropped']} dropped while the model was busy); frame arrival → match "
        f"p50 {arrival['p50']:.1f} ms, p95 {arrival['p95']:.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
