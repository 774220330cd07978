"""What a source argument names (spec.py) and the sampling options' checks (sampling.py)."""

from __future__ import annotations

import pytest

from invspread_edge_runtime.errors import ConfigError, DataError, SourceError
from invspread_edge_runtime.sources.sampling import Sampling, parse_duration
from invspread_edge_runtime.sources.spec import SourceSpec, parse_source, redact


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("shop.mp4", SourceSpec("video", "shop.mp4", "shop.mp4")),
        ("clips/a.MKV", SourceSpec("video", "clips/a.MKV", "clips/a.MKV")),
        ("photo.jpg", SourceSpec("image", "photo.jpg", "photo.jpg")),
        ("file:///data/my%20clip.mov", SourceSpec("video", "/data/my clip.mov", "/data/my clip.mov")),
        ("rtsp://cam1/stream", SourceSpec("stream", "rtsp://cam1/stream", "rtsp://cam1/stream")),
        ("rtsp://u:pw@cam1:554/s", SourceSpec("stream", "rtsp://u:pw@cam1:554/s", "rtsp://u@cam1:554/s")),
        ("rtsps://cam1/s", SourceSpec("stream", "rtsps://cam1/s", "rtsps://cam1/s")),
        (  # an IP camera's MJPEG feed is live
            "http://cam/video.mjpg?x=1",
            SourceSpec("stream", "http://cam/video.mjpg?x=1", "http://cam/video.mjpg?x=1"),
        ),
        (
            "https://host/rec/day.mp4",
            SourceSpec("video", "https://host/rec/day.mp4", "https://host/rec/day.mp4"),
        ),
        ("http://cam/live.ts", SourceSpec("stream", "http://cam/live.ts", "http://cam/live.ts")),
        ("http://cam/live", SourceSpec("stream", "http://cam/live", "http://cam/live")),
        ("rtp://@:5000", SourceSpec("stream", "rtp://@:5000", "rtp://@:5000")),
        ("v4l2:///dev/video0", SourceSpec("v4l2", "/dev/video0", "v4l2:///dev/video0")),
        ("v4l2://1", SourceSpec("v4l2", "/dev/video1", "v4l2:///dev/video1")),
        ("/dev/video2", SourceSpec("v4l2", "/dev/video2", "v4l2:///dev/video2")),
        ("csi://0", SourceSpec("csi", "0", "csi://0")),
        (
            "gst:videotestsrc ! appsink",
            SourceSpec("gst", "videotestsrc ! appsink", "gst:videotestsrc ! appsink"),
        ),
    ],
)
def test_sources_that_parse(text, spec):
    assert parse_source(text) == spec


@pytest.mark.parametrize(("text", "live"), [("a.mp4", False), ("rtsp://c/s", True), ("csi://1", True)])
def test_live_and_file_kinds(text, live):
    assert parse_source(text).live is live and parse_source(text).is_file is not live


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("ftp://host/a.mp4", SourceError, "ftp:// is not a source type"),
        ("rtsp://", SourceError, "no host"),
        ("rtsp://u:p@cam:abc/x", SourceError, "invalid source URL 'rtsp://u@cam:abc/x'"),
        ("rtsp://[::1/x", SourceError, "invalid source URL"),
        ("v4l2:///dev/camera", SourceError, "/dev/videoN device"),
        ("csi://9", SourceError, "sensor id is a number from 0 to 7"),
        ("csi://front", SourceError, "sensor id"),
        ("gst:videotestsrc ! autovideosink", SourceError, "must end in appsink"),
        ("notes.txt", DataError, "not an image or video file"),
    ],
)
def test_sources_that_are_refused(text, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(")):
        parse_source(text)


def test_a_refused_url_never_shows_its_password():
    with pytest.raises(SourceError) as raised:
        parse_source("ftp://user:hunter2@host/x")
    assert "hunter2" not in str(raised.value)
    assert redact("rtsp://a:b@[::1]:8554/x") == "rtsp://a@[::1]:8554/x"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("rtsp://u:p@ss@cam/x", "rtsp://u@cam/x"),
        ("http://cam/v?user=a&password=s3&x=1", "http://cam/v?user=a&password=***&x=1"),
        ("http://cam/v?token=s3", "http://cam/v?token=***"),
        ("rtsp://cam/x?pwd=s3", "rtsp://cam/x?pwd=***"),
    ],
)
def test_redact_hides_every_form_of_password(text, shown):
    assert redact(text) == shown and parse_source(text).name == shown


def test_a_gst_pipeline_is_named_without_its_passwords():
    spec = parse_source("gst:rtspsrc location=rtsp://u:s3@cam/x user-id=u user-pw=s3 ! decodebin ! appsink")
    assert "s3" not in spec.name and "s3" in spec.target


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("2.5", 2.5), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("500ms", 0.5),
     ("1:30", 90.0), ("01:02:03.5", 3723.5)],
)  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration(text, "--duration") == seconds


@pytest.mark.parametrize("text", ["", "ten", "10 parsecs", "1:2:3:4", "m5"])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text, "--duration")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"every": 0}, "--every"),
        ({"fps": 0}, "--fps"),
        ({"max_frames": 0}, "--max-frames"),
        ({"duration": 0}, "--duration"),
        ({"start": -1}, "--start"),
        ({"every": 2, "fps": 1}, "--every and --fps both choose frames"),
        ({"start": 5, "end": 5}, "--end 5 is not after --start 5"),
    ],
)
def test_sampling_refusals(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        Sampling(**kwargs)
