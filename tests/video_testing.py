"""Real encoded videos for the tests: known pictures (Fashion-MNIST test images) written by PyAV, one
per frame, so that every frame's content, index and time are known in advance. The one video writer
of the tests (the source, watch and RTSP tests all use it). A module of its own (not conftest.py):
`from conftest import` can find another folder's conftest.py first."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 25
N_FRAMES = 50
# the mean absolute difference (0-255) allowed between a decoded frame and the image it was made
# from: H.264 at crf 0 is lossless in luma; MJPEG at qscale 2 loses a little on 28x28 edges
CODEC_TOLERANCE = {"h264": 1.0, "mjpeg": 6.0}


def make_video(
    path: Path,
    images: Sequence[np.ndarray],
    codec: str = "h264",
    fps: int = FPS,
    *,
    faststart: bool = False,
    gop: int = 10,
    crf: int = 0,
    format: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write `images` ((H, W, 3) uint8 RGB, even H and W) as one frame each at `fps`: frame i shows
    images[i] at time i / fps. H.264 at `crf` (0: lossless; yuv420p, a key frame every `gop`
    frames, no B-frames), MJPEG at qscale 2 (yuvj420p). `faststart` puts an mp4's index first, so
    that a truncated copy still opens. `format` and `options`: the container (muxer) and its
    options, where the path's suffix does not say (an HLS playlist: "hls")."""
    import av

    options = ({"movflags": "+faststart"} if faststart else {}) | (options or {})
    with av.open(str(path), "w", format=format, options=options) as container:
        stream = container.add_stream("libx264" if codec == "h264" else "mjpeg", rate=fps)
        height, width = images[0].shape[:2]
        stream.width, stream.height = width, height
        if codec == "h264":
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "g": str(gop), "bf": "0"}
        else:
            stream.pix_fmt = "yuvj420p"
            stream.options = {"qscale": "2"}
            stream.codec_context.qscale = 2
        stream.time_base = Fraction(1, fps)
        for i, rgb in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
