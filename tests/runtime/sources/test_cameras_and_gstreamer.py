"""Cameras and GStreamer as far as they go without a camera or a Jetson: the device checks (a
missing, forbidden, busy device), the decoder each source gets, the CSI and hardware-decoding
pipelines as written, and real frames through GStreamer (`gst:` pipelines, a file through
decodebin) under the system Python, which has PyGObject."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from http_testing import gst_rtp_missing, rtp_h264_sender, udp_port
from rtsp_testing import SYSTEM_PYTHON, gst_available, skip_or_fail

from invspread_edge_runtime.errors import ConfigError, SourceError
from invspread_edge_runtime.sources import gstreamer
from invspread_edge_runtime.sources.devices import check_camera, device_error
from invspread_edge_runtime.sources.open import choose_decoder, open_source
from invspread_edge_runtime.sources.pyav import RTP_H264_PIPELINE
from invspread_edge_runtime.sources.sampling import Sampling
from invspread_edge_runtime.sources.spec import parse_source

RUNTIME = Path(__file__).resolve().parents[3] / "runtime"


# --- V4L2 devices ----------------------------------------------------------------------------------


def test_a_missing_camera_says_how_to_list_them(tmp_path):
    with pytest.raises(SourceError) as raised:
        check_camera(tmp_path / "video7")
    assert "does not exist" in str(raised.value)
    assert "ls /dev/video*" in str(raised.value) and "v4l2-ctl --list-devices" in str(raised.value)


def test_a_missing_camera_is_refused_before_the_decoder_opens_it():
    if Path("/dev/video63").exists():
        pytest.skip("this machine has a /dev/video63")
    with pytest.raises(SourceError, match="camera /dev/video63 does not exist"):
        open_source(parse_source("v4l2:///dev/video63"), Sampling())


def test_a_camera_that_opens_passes_the_check(tmp_path):
    device = tmp_path / "video0"
    device.write_bytes(b"")
    check_camera(device)


_AS_NOBODY = """
import os, sys
os.setgid(65534); os.setuid(65534)
from invspread_edge_runtime.errors import SourceError
from invspread_edge_runtime.sources.devices import check_camera
try:
    check_camera(sys.argv[1])
except SourceError as error:
    print(error)
"""


def test_a_camera_without_permission_names_the_video_group():
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # one an unprivileged user can walk into
    folder.chmod(0o755)
    device = folder / "video0"
    device.write_bytes(b"")
    device.chmod(0o000)
    try:
        if os.geteuid() != 0:
            with pytest.raises(SourceError) as raised:
                check_camera(device)
            message = str(raised.value)
        else:  # root opens anything: check as an unprivileged user, in a child process
            done = subprocess.run(
                [SYSTEM_PYTHON, "-c", _AS_NOBODY, str(device)],  # the venv's may sit where nobody reads
                capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(RUNTIME)},
            )  # fmt: skip
            if "PermissionError" in done.stderr or done.returncode:
                pytest.skip(f"cannot run as an unprivileged user here: {done.stderr.strip()[-200:]}")
            message = done.stdout
    finally:
        shutil.rmtree(folder)
    assert "no permission to open camera" in message and "'video' group" in message


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EBUSY, ["is busy", "another program", "fuser"]),
        (errno.EACCES, ["no permission", "'video' group"]),
        (errno.ENODEV, ["does not exist", "v4l2-ctl --list-devices"]),
        (errno.EIO, ["cannot open camera /dev/video0", "v4l2-ctl --list-devices"]),
    ],
)
def test_each_device_error_gets_its_line(code, words):
    message = str(device_error("/dev/video0", OSError(code, os.strerror(code))))
    assert all(word in message for word in words), message


# --- which decoder ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "jetson", "decoder"),
    [
        ("clip.mp4", False, "pyav"),
        ("rtsp://cam/x", False, "pyav"),
        ("/dev/video0", False, "pyav"),
        ("clip.mp4", True, "gstreamer"),
        ("rtsp://cam/x", True, "gstreamer"),
        ("/dev/video0", True, "pyav"),
        ("csi://0", False, "gstreamer"),
        ("gst:videotestsrc ! appsink", False, "gstreamer"),
    ],
)
def test_auto_picks_the_decoder(monkeypatch, source, jetson, decoder):
    monkeypatch.setattr(gstreamer, "hardware_decoding", lambda: jetson)
    assert choose_decoder(parse_source(source)) == decoder


def test_pyav_cannot_read_a_csi_camera():
    with pytest.raises(ConfigError, match="read through GStreamer"):
        choose_decoder(parse_source("csi://0"), "pyav")


@pytest.mark.skipif(gstreamer.gst_binding() is not None, reason="GStreamer is reachable from this Python")
def test_csi_without_gstreamer_says_it_needs_jetpack():
    with pytest.raises(SourceError) as raised:
        open_source(parse_source("csi://0"), Sampling())
    assert "csi://0 needs JetPack's GStreamer" in str(raised.value)
    assert "\n" not in str(raised.value)


# --- the pipelines as written ----------------------------------------------------------------------


def test_the_csi_pipeline_uses_nvidias_elements():
    assert gstreamer.csi_pipeline(1) == (
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=RGB ! "
        "appsink name=invedge_sink sync=false drop=true max-buffers=1"
    )
    assert gstreamer.csi_pipeline(0, "BGR", (1920, 1080), 60).startswith(
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=60/1 ! "
    )


def test_hardware_decoding_pipelines(monkeypatch):
    monkeypatch.setattr(gstreamer, "has_element", lambda name: True)  # as on a Jetson
    rtsp = gstreamer.decode_pipeline(parse_source("rtsp://user:pw@cam/x"))
    assert rtsp == (
        'rtspsrc location="rtsp://user:pw@cam/x" protocols=tcp latency=200 ! decodebin ! nvvidconv ! '
        "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=RGB ! "
        "appsink name=invedge_sink sync=false drop=true max-buffers=1"
    )
    local = gstreamer.decode_pipeline(parse_source("/data/shop.mp4"))
    assert local.startswith('uridecodebin uri="file:///data/shop.mp4" ! nvvidconv ! ')
    assert local.endswith(
        "appsink name=invedge_sink sync=false drop=false max-buffers=4"
    )  # a file: none dropped
    assert gstreamer.pipeline_for(parse_source("/data/shop.mp4"))[1] == "gstreamer (nvv4l2decoder)"
    assert gstreamer.pipeline_for(parse_source("csi://2"))[1] == "gstreamer (nvarguscamerasrc)"


# --- real frames through GStreamer (the system Python has PyGObject) -------------------------------

_READ = """
import json, sys
from invspread_edge_runtime.errors import SourceError
from invspread_edge_runtime.sources.open import open_source
from invspread_edge_runtime.sources.sampling import Sampling
from invspread_edge_runtime.sources.spec import parse_source
try:
    with open_source(parse_source(sys.argv[1]), Sampling(max_frames=int(sys.argv[2])), decoder="gstreamer",
                     open_timeout=5, reconnect=0) as source:
        frames = [(f.index, f.time, f.rgb.shape, f.rgb[0, 0].tolist(), float(f.rgb.mean())) for f in source.frames()]
    print(json.dumps({"decoder": source.decoder, "live": source.live, "frames": frames}))
except SourceError as error:
    print(json.dumps({"error": str(error)}))
"""


def _system_numpy() -> str | None:
    """Why the system Python cannot run the runtime's reader (beyond GStreamer), or None."""
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import numpy, PIL"], capture_output=True, text=True, timeout=60
    )
    return (
        None if done.returncode == 0 else f"{SYSTEM_PYTHON} lacks numpy or PIL: {done.stderr.strip()[-200:]}"
    )


@pytest.fixture(scope="module")
def system_gst():
    if (why := gst_available() or _system_numpy()) is not None:
        skip_or_fail(why)  # in CI (CI=true) a missing GStreamer fails instead

    def read(source: str, max_frames: int = 5) -> dict:
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", _READ, source, str(max_frames)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(RUNTIME)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    return read


def test_a_gst_pipeline_delivers_rgb_frames(system_gst):
    result = system_gst(
        "gst:videotestsrc is-live=true pattern=red num-buffers=60 ! video/x-raw,width=64,height=48 ! videoconvert ! appsink"
    )
    assert result["decoder"] == "gstreamer (pipeline)" and result["live"]
    frames = result["frames"]
    assert len(frames) == 5 and [f[0] for f in frames] == sorted({f[0] for f in frames})
    assert all(f[2] == [48, 64, 3] and f[3] == [255, 0, 0] for f in frames)  # red is red: RGB order


def test_odd_widths_are_unpadded(system_gst):
    frames = system_gst(
        "gst:videotestsrc is-live=true pattern=blue num-buffers=30 ! video/x-raw,width=27,height=9 ! videoconvert ! appsink",
        2,
    )["frames"]
    assert frames[0][2] == [9, 27, 3] and frames[0][3] == [0, 0, 255]


def test_a_bad_gst_pipeline_is_one_line(system_gst):
    assert "no element" in system_gst("gst:nosuchelement ! appsink")["error"]


def test_csi_without_nvarguscamerasrc_says_it_needs_jetpack(system_gst):
    error = system_gst("csi://0")["error"]
    assert "needs JetPack's GStreamer element nvarguscamerasrc" in error


def test_a_file_through_gstreamer_keeps_indices_and_times(system_gst, videos):
    result = system_gst(str(videos["mjpeg.avi"]), 50)  # jpegdec: in every GStreamer install
    assert result["decoder"] == "gstreamer (decodebin)" and not result["live"]
    frames = result["frames"]
    assert [f[0] for f in frames] == list(range(50))
    assert [f[1] for f in frames] == pytest.approx([i / 25 for i in range(50)], abs=1e-6)
    assert all(f[2] == [28, 28, 3] for f in frames)


def test_the_rtp_h264_pipeline_the_error_suggests_reads_the_stream(system_gst):
    """FFmpeg cannot read H.264 over RTP without an SDP; the pipeline its error suggests (pyav.py)
    reads such a stream through our GStreamer reader."""
    if (why := gst_rtp_missing()) is not None:
        skip_or_fail(why)
    port = udp_port()
    with rtp_h264_sender(port):
        result = system_gst(f"gst:{RTP_H264_PIPELINE.replace('PORT', str(port))}")
    assert "error" not in result, result
    assert result["decoder"] == "gstreamer (pipeline)" and result["live"]
    assert len(result["frames"]) == 5 and all(f[2] == [112, 112, 3] for f in result["frames"])
