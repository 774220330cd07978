"""Which gallery image files the service hands out: one rule for every gallery (file index, Milvus).

A gallery records one location per item. That is data, not authority: anyone who can write an
index file can recompute its checksum, and anyone who can write to a Milvus collection can put any
path in it. So the service serves a recorded file only when all of this holds:

- it lies under a folder the operator named with `--image-root` (each opened once, at start);
- no name below that folder is a symbolic link: each folder on the way is opened relative to the
  one above with O_NOFOLLOW, so a link (to a file or a folder, inside or outside) is never followed;
- it is a regular file (no FIFO, device or folder) of at most `--max-upload-mb`: checked with
  lstat before opening and with fstat on the opened descriptor (the same inode, or it is refused);
- the bytes read through that one descriptor decode as an image of a format the toolkit reads, of
  at most `--max-pixels`; they are served as read, with the media type of the format decoded
  (never of the file's suffix).

Without `--image-root`, no gallery image is served. POSIX only (openat with O_NOFOLLOW).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InvedgeError

MAX_IMAGE_ROOTS = 16
# Pillow's format name → the media type served; only formats the toolkit reads (preprocess.IMAGE_SUFFIXES)
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # a camera's multi-picture JPEG: its first picture is a plain JPEG stream
    "PNG": "image/png",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class NotServed(Exception):
    """A recorded location the service will not hand out; the message says why (for the 404)."""


@dataclass(frozen=True)
class ServedImage:
    data: bytes
    media_type: str


def check_image_roots(roots: Sequence[Path]) -> None:
    """One-line errors for --image-root: too many, missing, not a folder, '/', or not readable."""
    if len(roots) > MAX_IMAGE_ROOTS:
        raise ConfigError(
            f"{len(roots)} --image-root folders given; at most {MAX_IMAGE_ROOTS} are allowed",
            "Give the folders the gallery's images are in, or one folder above them",
        )
    hint = "Give the folder the gallery's images are in (the folder 'invedge embed' was given)"
    for root in roots:
        try:
            mode = os.stat(root).st_mode
        except FileNotFoundError:
            raise ConfigError(f"--image-root {root} not found", hint) from None
        except OSError as exc:
            raise ConfigError(f"--image-root {root} cannot be read ({exc.strerror or exc})", hint) from None
        if not stat.S_ISDIR(mode):
            raise ConfigError(f"--image-root {root} is not a folder", hint)
        if os.path.realpath(root) == os.path.sep:
            raise ConfigError(f"--image-root {root} would serve every image file of this machine", hint)
        if not os.access(root, os.R_OK | os.X_OK):
            raise ConfigError(
                f"--image-root {root} is not readable by this user", "Check the folder's permissions"
            )


class ImageRoots:
    """The `--image-root` folders, each held open while the service runs; safe from any thread."""

    def __init__(self, roots: Sequence[Path], max_bytes: int, max_pixels: int) -> None:
        check_image_roots(roots)
        if roots and os.open not in os.supports_dir_fd:
            raise ConfigError("--image-root needs a POSIX system (openat)", "Serve without --image-root")
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._roots: list[tuple[tuple[str, ...], int]] = []  # (the names it goes by, its descriptor)
        try:
            for root in roots:
                fd = os.open(os.path.realpath(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                names = {os.path.abspath(root), os.path.realpath(root)}  # as given, and links resolved
                self._roots.append((tuple(sorted(names)), fd))
        except OSError as exc:
            self.close()
            raise InvedgeError(f"cannot open --image-root {root}: {exc.strerror or exc}") from exc

    def __len__(self) -> int:
        return len(self._roots)

    def close(self) -> None:
        for _, fd in self._roots:
            os.close(fd)
        self._roots = []

    def __enter__(self) -> ImageRoots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def may_serve(self, recorded: str | None) -> bool:
        """Whether `recorded` is a regular file under a root, reached without links (no bytes read:
        for the `image` URL of search results; GET checks the rest)."""
        try:
            with self._entry(recorded):
                return True
        except NotServed:
            return False

    def read(self, recorded: str | None) -> ServedImage:
        """The image file at `recorded`, opened once and read through that descriptor; NotServed if
        any rule of this module refuses it."""
        with self._entry(recorded) as (folder, name, seen):
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=folder)
            except OSError as exc:
                raise _refusal(exc) from None
        with os.fdopen(fd, "rb") as fh:
            opened = os.fstat(fh.fileno())
            if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
                raise NotServed("it was replaced while being opened")
            data = fh.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise NotServed(f"it is larger than {self.max_bytes:,} bytes (--max-upload-mb)")
        return ServedImage(data, self._media_type(data))

    @contextlib.contextmanager
    def _entry(self, recorded: str | None) -> Iterator[tuple[int, str, os.stat_result]]:
        """(descriptor of the folder holding it, its name, its lstat), every folder on the way
        opened with O_NOFOLLOW; NotServed when it is not a regular file under a root."""
        root_fd, parts = self._below_a_root(recorded)
        folder = root_fd
        try:
            for part in parts[:-1]:
                try:
                    below = os.open(part, _DIR_FLAGS, dir_fd=folder)
                except OSError as exc:
                    raise _refusal(exc) from None
                if folder != root_fd:
                    os.close(folder)
                folder = below
            try:
                seen = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
            except OSError as exc:
                raise _refusal(exc) from None
            if stat.S_ISLNK(seen.st_mode):
                raise NotServed("it is a symbolic link (links are not followed)")
            if not stat.S_ISREG(seen.st_mode):
                raise NotServed("it is not a regular file")
            if seen.st_size > self.max_bytes:
                raise NotServed(f"it is larger than {self.max_bytes:,} bytes (--max-upload-mb)")
            yield folder, parts[-1], seen
        finally:
            if folder != root_fd:
                os.close(folder)

    def _below_a_root(self, recorded: str | None) -> tuple[int, list[str]]:
        """The root holding `recorded` (compared as text, after removing '.' and '..') and the names
        below it; NotServed when it is under none."""
        if not self._roots:
            raise NotServed("this server serves no gallery images (it was started without --image-root)")
        if not recorded or "\x00" in recorded or not os.path.isabs(recorded):
            raise NotServed("the gallery records no absolute path for it")
        path = os.path.normpath(recorded)
        for names, fd in self._roots:
            for name in names:
                if path.startswith(name.rstrip(os.sep) + os.sep):
                    parts = path[len(name.rstrip(os.sep)) + 1 :].split(os.sep)
                    if all(part not in ("", ".", "..") for part in parts):
                        return fd, parts
        raise NotServed("it is not under an --image-root of this server")

    def _media_type(self, data: bytes) -> str:
        """The media type of the format `data` decodes as; NotServed when it is not such an image."""
        # here: settings (and so `invedge serve --help`) import this module. preprocess silences
        # Pillow's DecompressionBombWarning for the process (warnings.catch_warnings is not thread-safe)
        from PIL import Image

        from .. import preprocess  # noqa: F401

        Image.init()  # every plugin registered (once), so that `formats` names only loaded ones
        formats = [name for name in MEDIA_TYPES if name in Image.OPEN]
        try:
            with Image.open(io.BytesIO(data), formats=formats) as image:
                width, height = image.size
                if width * height > self.max_pixels:
                    raise NotServed(f"it has {width * height:,} pixels, over --max-pixels")
                image.verify()
                kind = str(image.format)
        except NotServed:
            raise
        except Image.DecompressionBombError:
            raise NotServed("it has too many pixels, over --max-pixels") from None
        except Exception as exc:  # any decoder failure means the same: not an image we serve
            raise NotServed(f"it is not an image of a known format ({type(exc).__name__})") from None
        return MEDIA_TYPES[kind]


def _refusal(exc: OSError) -> NotServed:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return NotServed("a symbolic link or a file stands on its way (links are not followed)")
    if exc.errno == errno.ENOENT:
        return NotServed("the file is not on this server")
    return NotServed(f"it cannot be opened ({exc.strerror or exc})")
