"""Session fixtures of real encoded videos (tests/video_testing.py writes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from video_testing import N_FRAMES, make_video


@pytest.fixture(scope="session")
def fmnist_frames(fmnist_test) -> np.ndarray:
    """(N_FRAMES, 28, 28, 3) uint8 RGB: the first Fashion-MNIST test images, frame i = image i."""
    return np.ascontiguousarray(fmnist_test.images[:N_FRAMES].transpose(0, 2, 3, 1))


@pytest.fixture(scope="session")
def videos(tmp_path_factory, fmnist_frames) -> dict[str, Path]:
    """The same N_FRAMES frames at FPS as H.264 in .mp4 and .mkv and as MJPEG in .avi and .mkv."""
    folder = tmp_path_factory.mktemp("videos")
    return {
        "h264.mp4": make_video(folder / "h264.mp4", fmnist_frames, "h264"),
        "h264.mkv": make_video(folder / "h264.mkv", fmnist_frames, "h264"),
        "mjpeg.avi": make_video(folder / "mjpeg.avi", fmnist_frames, "mjpeg"),
        "mjpeg.mkv": make_video(folder / "mjpeg.mkv", fmnist_frames, "mjpeg"),
    }
