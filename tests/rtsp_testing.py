"""What the stream tests share: a real RTSP server on loopback (tests/rtsp_server.py, GstRtspServer under
the system Python) serving a video file and a live feed of known Fashion-MNIST pictures, the ports that
fault (one that accepts and never answers, one that refuses), and the pixel check that names the picture
a decoded frame was made from. A module of its own, as milvus_testing.py is; tests/conftest.py exposes
its fixtures.

Each picture is a 28 × 28 Fashion-MNIST test image, grey, enlarged SCALE times by repeating pixels (so
the codec's blocks do not mix neighbouring pictures' pixels much), as RGB.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from video_testing import make_video

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).resolve().parent / "rtsp_server.py"
SCALE = 4  # 28 px pictures shown at 112 × 112
FPS = 25  # both mounts
FILE_FRAMES = 100  # /file: 4 s, frame i shows test image i
LIVE_FIRST, LIVE_FRAMES = 1000, 20  # /live: test images 1000..1019, looped
# A decoded frame, shrunk back to 28 × 28, is within about 1 grey level of its picture (mean absolute
# difference, measured 0.45 on average, 0.73 at worst through H.264 and RTSP); two different pictures
# of the set differ by 20 or more. 4 leaves margin for another encoder build and still names one picture.
MATCH_TOLERANCE = 4.0
READY_S = 30
DEPS = "make rtsp-deps (Debian: gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly python3-gi)"
_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('appsrc', 'x264enc', 'rtph264pay', 'qtdemux', 'h264parse', 'videoconvert') "
    "if Gst.ElementFactory.find(e) is None]; "
    "print('missing GStreamer elements: ' + ' '.join(missing) if missing else 'ok')"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def picture(image: np.ndarray) -> np.ndarray:
    """A 28 × 28 grey image as the (112, 112, 3) uint8 RGB frame the videos show."""
    big = np.repeat(np.repeat(image, SCALE, axis=0), SCALE, axis=1)
    return np.repeat(big[:, :, None], 3, axis=2)


def match_picture(rgb: np.ndarray, images: np.ndarray) -> tuple[int, float]:
    """(index into `images`, mean absolute grey difference) of the picture a decoded frame shows."""
    h, w = images.shape[1:]
    grey = rgb.astype(np.float32).mean(axis=2)
    small = grey.reshape(h, grey.shape[0] // h, w, grey.shape[1] // w).mean(axis=(1, 3))
    errors = np.abs(images.astype(np.float32) - small).mean(axis=(1, 2))
    best = int(errors.argmin())
    return best, float(errors[best])


def read_rtsp(url: str, count: int, timeout: float = 10.0) -> list[np.ndarray]:
    """The first `count` frames of an RTSP stream as RGB arrays, with plain PyAV over TCP."""
    import av

    frames = []
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=timeout) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= count:
                break
    return frames


def gst_available() -> str | None:
    """None when the system Python can run the server, else why not."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["failed"])[-1]
        return f"{SYSTEM_PYTHON} cannot load GstRtspServer ({last})"
    return None if probe.stdout.strip() == "ok" else probe.stdout.strip()


def skip_or_fail(reason: str) -> None:
    """Skip with the reason, except in CI (CI=true), where a missing server must not pass silently."""
    message = f"the RTSP tests need GStreamer's RTSP server: {reason}. Run {DEPS}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class RtspServer:
    """tests/rtsp_server.py running on 127.0.0.1:`port`: `/file` streams `file_path` (frame i shows
    `file_images[i]`), `/live` loops `live_images` as a live camera would, both at FPS."""

    folder: Path
    file_images: np.ndarray  # (FILE_FRAMES, 28, 28) uint8
    live_images: np.ndarray  # (LIVE_FRAMES, 28, 28) uint8
    port: int = field(default_factory=free_port)
    fps: int = FPS
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}"

    @property
    def file_url(self) -> str:
        return f"{self.url}/file"

    @property
    def live_url(self) -> str:
        return f"{self.url}/live"

    @property
    def file_path(self) -> Path:
        return self.folder / "file.mp4"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def prepare(self) -> RtspServer:
        """Write the file PyAV encodes and the raw frames the live feed loops."""
        # H.264 near-lossless (crf 12), a key frame every second
        pictures = [picture(image) for image in self.file_images]
        make_video(self.file_path, pictures, "h264", self.fps, gop=self.fps, crf=12)
        np.stack([picture(image) for image in self.live_images]).tofile(self.folder / "live.rgb")
        return self

    def start(self) -> RtspServer:
        """Start the server process and wait for its READY line."""
        size = self.live_images.shape[1] * SCALE
        command = [
            SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--file", str(self.file_path),
            "--live", str(self.folder / "live.rgb"), "--live-size", f"{size}x{size}",
            "--live-fps", str(self.fps), "--parent", str(os.getpid()),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the RTSP server exited at start: {self.log.read_text()[-2000:]}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready and self.proc.stdout.readline().startswith(b"READY"):
                return self
        self.kill()
        raise AssertionError(
            f"the RTSP server did not say READY in {READY_S} s: {self.log.read_text()[-2000:]}"
        )

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-stream, its connections cut without a goodbye."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=READY_S)
            self.proc.stdout.close()

    def restart(self) -> RtspServer:
        """A fresh server on the same port (killing the running one first, if any)."""
        self.kill()
        return self.start()

    def ensure_running(self) -> RtspServer:
        """Start it again if an earlier test killed it and did not restart it."""
        return self if self.alive else self.start()


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte (a stream that hangs at open)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port held bound but not listening while the test uses it: connections are refused
    at once, and no other program can take the port meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="session")
def rtsp_server(tmp_path_factory, fmnist_test) -> Iterator[RtspServer]:
    """The RTSP server, started once per pytest process (each xdist worker that asks gets its own, on
    its own port). A test that kills it restarts it before it ends (`try: ... finally: restart()`);
    tests that read it call `ensure_running()` first if they may follow such a test."""
    reason = gst_available()
    if reason is not None:
        skip_or_fail(reason)
    try:
        import av  # noqa: F401
    except ImportError:
        skip_or_fail("PyAV (the runtime's [video] extra) is not installed")
    images = fmnist_test.images[:, 0]
    server = RtspServer(
        folder=tmp_path_factory.mktemp("rtsp"),
        file_images=images[:FILE_FRAMES],
        live_images=images[LIVE_FIRST : LIVE_FIRST + LIVE_FRAMES],
    )
    server.prepare().start()
    yield server
    server.kill()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """The port of a loopback listener that accepts and never answers (`silent_listener()`)."""
    with silent_listener() as port:
        yield port
