"""A real RTSP server for the stream tests: GstRtspServer on loopback, run under the system Python.

Debian's GstRtspServer bindings (gir1.2-gst-rtsp-server-1.0, python3-gi) belong to /usr/bin/python3,
not to the project's virtual environment, so the tests start this file as a subprocess:

    /usr/bin/python3 tests/rtsp_server.py --port PORT --file VIDEO.mp4 --live FRAMES.rgb \
        --live-size 112x112 --live-fps 25

Two mounts:
- `/file`: the H.264 MP4 file, streamed as it is (demuxed and payloaded, never re-encoded), paced at
  its own frame rate. Not shared: each client gets its own playback from the first frame, as a video
  server does, so several readers each see the whole file.
- `/live`: a live camera look-alike. `FRAMES.rgb` holds raw RGB frames (N × H × W × 3 bytes); an
  `appsrc is-live=true` is fed the next one every 1/fps seconds of wall time whether or not a client
  reads (a slow client misses frames, as with a camera), encoded by x264 (zerolatency, a key frame
  every second) and shared by all clients, as a camera's one encoder is.

Prints `READY rtsp://127.0.0.1:PORT` once the socket listens; stays up until killed (or, with
`--parent PID`, until that process is gone, so a killed test run leaves no server behind).
Only the standard library and gi: this file never imports the project.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# The file is H.264 in MP4 (what PyAV writes in the tests): demux and payload it as it is.
# config-interval=-1: SPS/PPS with every key frame, so a client that joins late can decode.
FILE_LAUNCH = (
    "( filesrc location={path} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)

# A constant quantizer keeps the small grey pictures close to their source (the tests compare
# pixels); key-int-max = fps: a client joining (or reconnecting) decodes within a second.
LIVE_LAUNCH = (
    "( appsrc name=src is-live=true do-timestamp=true format=time leaky-type=downstream max-buffers=2 "
    "caps=video/x-raw,format=RGB,width={w},height={h},framerate={fps}/1 "
    "! videoconvert ! video/x-raw,format=I420 "
    "! x264enc tune=zerolatency speed-preset=ultrafast pass=quant quantizer=12 key-int-max={fps} bframes=0 "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)


class LiveFeed:
    """Pushes the next raw frame into a live media's appsrc every 1/fps seconds, until it is unprepared."""

    def __init__(self, frames: list[bytes], fps: int) -> None:
        self.frames = frames
        self.fps = fps
        self.next = 0

    def attach(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name_recurse_up("src")
        timer = GLib.timeout_add(max(1, round(1000 / self.fps)), self.push, appsrc)
        media.connect("unprepared", lambda _media: GLib.source_remove(timer))

    def push(self, appsrc: Gst.Element) -> bool:
        data = self.frames[self.next % len(self.frames)]
        self.next += 1
        buffer = Gst.Buffer.new_wrapped(data)
        buffer.duration = Gst.SECOND // self.fps
        appsrc.emit("push-buffer", buffer)
        return True  # keep the timer


def read_frames(path: Path, width: int, height: int) -> list[bytes]:
    data = path.read_bytes()
    size = width * height * 3
    if not data or len(data) % size:
        sys.exit(f"error: {path} holds {len(data)} bytes, not whole {width}x{height} RGB frames")
    return [data[i : i + size] for i in range(0, len(data), size)]


def build(args: argparse.Namespace) -> GstRtspServer.RTSPServer:
    server = GstRtspServer.RTSPServer.new()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()

    file_factory = GstRtspServer.RTSPMediaFactory.new()
    file_factory.set_launch(FILE_LAUNCH.format(path=args.file))
    file_factory.set_shared(False)
    mounts.add_factory("/file", file_factory)

    width, height = (int(v) for v in args.live_size.split("x"))
    feed = LiveFeed(read_frames(args.live, width, height), args.live_fps)
    live_factory = GstRtspServer.RTSPMediaFactory.new()
    live_factory.set_launch(LIVE_LAUNCH.format(w=width, h=height, fps=args.live_fps))
    live_factory.set_shared(True)
    live_factory.connect("media-configure", feed.attach)
    mounts.add_factory("/live", live_factory)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True, help="an H.264 MP4 file for /file")
    parser.add_argument("--live", type=Path, required=True, help="raw RGB frames for /live")
    parser.add_argument("--live-size", default="112x112", help="WIDTHxHEIGHT of the raw frames")
    parser.add_argument("--live-fps", type=int, default=25)
    parser.add_argument("--parent", type=int, help="exit when this process is gone (a killed test run)")
    args = parser.parse_args()

    Gst.init(None)
    server = build(args)
    if server.attach(None) == 0:  # 0: the socket could not be bound
        sys.exit(f"error: cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    if args.parent:
        GLib.timeout_add_seconds(1, lambda: os.getppid() == args.parent or loop.quit())
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
