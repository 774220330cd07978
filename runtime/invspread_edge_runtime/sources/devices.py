"""Cameras checked before a decoder opens them, so that a missing, forbidden or busy one gets one
line that says what to do, not a decoder's errno."""

from __future__ import annotations

import errno
import os

from ..errors import SourceError

LIST_CAMERAS = "list the cameras with 'ls /dev/video*' or 'v4l2-ctl --list-devices'"


def check_camera(device: str | os.PathLike[str]) -> None:
    """SourceError when the V4L2 device at `device` does not exist, may not be opened by this user,
    or is held by another program; nothing when it opens."""
    try:
        os.stat(device)
        fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    except OSError as error:
        raise device_error(str(device), error) from None
    os.close(fd)


def device_error(device: str, error: OSError) -> SourceError:
    """The one line for a camera that failed to open with `error` (from open() or the decoder)."""
    code = error.errno
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return SourceError(
            f"camera {device} does not exist",
            f"Is it plugged in? {LIST_CAMERAS[0].upper()}{LIST_CAMERAS[1:]} (in a container: pass it with --device)",
        )
    if code in (errno.EACCES, errno.EPERM):
        return SourceError(
            f"no permission to open camera {device}",
            "Add the user to the 'video' group ('sudo usermod -aG video $USER', then log in again)",
        )
    if code == errno.EBUSY:
        return SourceError(
            f"camera {device} is busy: another program is using it",
            "Close the other program ('fuser /dev/videoN' names it) and run again",
        )
    return SourceError(
        f"cannot open camera {device}: {error.strerror or error}", f"Check the camera; {LIST_CAMERAS}"
    )
