"""HTTP and RTP streams of known Fashion-MNIST pictures on loopback, for the stream tests: an MJPEG
camera (multipart/x-mixed-replace JPEG parts, as IP cameras serve `/video.mjpg`), an HLS playlist
written by PyAV and served as static files, and an RTP/JPEG sender (the system GStreamer).

Every server listens on 127.0.0.1 only and stops by itself after `lifetime` seconds, so that a test
that fails halfway never leaves one running. The pictures are rtsp_testing's (28 × 28 grey shown at
112 × 112), so `rtsp_testing.match_picture` names the one a decoded frame shows.
"""

from __future__ import annotations

import contextlib
import functools
import io
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image
from rtsp_testing import FPS, picture
from video_testing import make_video

LIFETIME_S = 60.0
BOUNDARY = "invedgeframe"
GST_LAUNCH = "/usr/bin/gst-launch-1.0"
JPEG_QUALITY = 95


def jpeg_of(image: np.ndarray) -> bytes:
    """A 28 × 28 grey picture as the JPEG a camera would send (112 × 112 RGB)."""
    data = io.BytesIO()
    Image.fromarray(picture(image)).save(data, "JPEG", quality=JPEG_QUALITY)
    return data.getvalue()


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restart takes the same port at once


class MjpegCamera:
    """A live MJPEG-over-HTTP camera on 127.0.0.1: every client gets `images` as JPEG parts of a
    multipart/x-mixed-replace response, looped at `fps`, until `stop()` or `lifetime` seconds."""

    def __init__(self, images: np.ndarray, fps: int = FPS, lifetime: float = LIFETIME_S) -> None:
        self.images, self.fps, self.lifetime = images, fps, lifetime
        self.parts = [jpeg_of(image) for image in images]
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> MjpegCamera:
        """Listen (on the same port again after a stop) and serve until stop() or the lifetime."""
        self._stopped = threading.Event()
        self._server = _Quiet(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """The camera goes away mid-stream: every client's response ends, new ones are refused."""
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        camera, stopped = self, self._stopped

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client went away
                    camera._send_parts(self.wfile, stopped)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _send_parts(self, out: io.BufferedIOBase, stopped: threading.Event) -> None:
        started, sent = time.monotonic(), 0
        while not stopped.is_set():
            part = self.parts[sent % len(self.parts)]
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(part)}\r\n\r\n"
            out.write(head.encode() + part + b"\r\n")
            out.flush()
            sent += 1
            stopped.wait(max(0.0, started + sent / self.fps - time.monotonic()))


@contextlib.contextmanager
def mjpeg_camera(images: np.ndarray, fps: int = FPS) -> Iterator[MjpegCamera]:
    camera = MjpegCamera(images, fps).start()
    try:
        yield camera
    finally:
        camera.stop()


def write_hls(folder: Path, images: np.ndarray, fps: int = FPS) -> Path:
    """`images` (n, 28, 28) as an HLS video-on-demand playlist (index.m3u8 + 1 s MPEG-TS segments)
    written by video_testing's encoder (H.264, a key frame each second), one picture per frame;
    the playlist's path."""
    folder.mkdir(parents=True, exist_ok=True)
    options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
    pictures = [picture(image) for image in images]
    return make_video(
        folder / "index.m3u8", pictures, "h264", fps, gop=fps, crf=12, format="hls", options=options
    )


@contextlib.contextmanager
def serve_folder(folder: Path, lifetime: float = LIFETIME_S) -> Iterator[str]:
    """`folder`'s files over HTTP on 127.0.0.1 (a web server holding an HLS playlist); its base URL."""

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = _Quiet(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    timer = threading.Timer(lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()


def udp_port() -> int:
    """A free UDP port on 127.0.0.1, for an RTP sender."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gst_rtp_missing() -> str | None:
    """None when the system GStreamer can send RTP/JPEG, else why not."""
    if not Path(GST_LAUNCH).exists() or shutil.which("gst-inspect-1.0") is None:
        return f"{GST_LAUNCH} is missing"
    for element in ("multifilesrc", "jpegparse", "rtpjpegpay", "udpsink", "x264enc", "rtph264pay"):
        found = subprocess.run(["gst-inspect-1.0", element], capture_output=True, timeout=30)
        if found.returncode != 0:
            return f"the GStreamer element {element} is missing"
    return None


@contextlib.contextmanager
def rtp_jpeg_sender(
    folder: Path, images: np.ndarray, port: int, fps: int = FPS, lifetime: float = LIFETIME_S
) -> Iterator[subprocess.Popen]:
    """gst-launch sending `images` as RTP/JPEG (static payload type 26) to 127.0.0.1:`port`, looped at
    `fps`, for `lifetime` seconds at most (then it ends by itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        (folder / f"{i:04d}.jpg").write_bytes(jpeg_of(image))
    command = [
        GST_LAUNCH, "-q", "multifilesrc", f"location={folder / '%04d.jpg'}", "loop=true",
        f"num-buffers={int(lifetime * fps)}", f"caps=image/jpeg,framerate={fps}/1",
        "!", "jpegparse", "!", "rtpjpegpay", "!", "udpsink", "host=127.0.0.1", f"port={port}", "sync=true",
    ]  # fmt: skip
    sender = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield sender
    finally:
        sender.kill()
        sender.wait(timeout=10)


@contextlib.contextmanager
def rtp_h264_sender(port: int, fps: int = FPS, lifetime: float = LIFETIME_S) -> Iterator[subprocess.Popen]:
    """gst-launch sending a test pattern as RTP/H.264 (dynamic payload type 96: readable only with an
    SDP description) to 127.0.0.1:`port`, for `lifetime` seconds at most; a key frame each second,
    so that a receiver that starts later decodes within one."""
    command = [
        GST_LAUNCH, "-q", "videotestsrc", "is-live=true", f"num-buffers={int(lifetime * fps)}",
        "!", f"video/x-raw,format=I420,width=112,height=112,framerate={fps}/1",
        "!", "x264enc", "tune=zerolatency", f"key-int-max={fps}", "!", "rtph264pay", "config-interval=1",
        "!", "udpsink", "host=127.0.0.1", f"port={port}",
    ]  # fmt: skip
    sender = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield sender
    finally:
        sender.kill()
        sender.wait(timeout=10)
