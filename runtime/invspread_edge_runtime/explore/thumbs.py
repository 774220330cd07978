"""Small JPEG copies of the images for the explore pages (the dedup report, the map page): a page
then loads kilobytes per image, not the originals, and keeps working offline from its own folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from ..errors import DataError
from ..files import staged_folder
from ..index.manage import Progress, no_progress
from ..preprocess import load_image
from ..search.grid import fit

JPEG_QUALITY = 85
PAGE_FILES_WRITER = "invedge page files"  # the marker of a page's NAME_files folder (files.FOLDER_MARKER)


def page_files(page: Path) -> Path:
    """The folder of a page's pictures: `NAME_files/` beside `NAME.html`."""
    return page.parent / f"{page.stem}_files"


def url_path(path: str) -> str:
    """A relative file path as it goes in `<img src>` (each segment URL-quoted: `dups#1_files/…`)."""
    return "/".join(quote(part) for part in path.split("/"))


@contextmanager
def page_files_folder(page: Path, option: str) -> Iterator[tuple[Path, Callable[[str], str]]]:
    """Build the `NAME_files/` folder of `page` aside and swap it in whole when the block ends.

    Yields (the folder to write in, `src(relative)`: the `<img src>` of a file written at
    `relative` in it, as seen from the page). An existing `NAME_files/` is replaced only when an
    earlier page wrote it (its marker): never a user's folder of that name, whatever it holds.
    """
    page = Path(page)
    folder = page_files(page)
    with staged_folder(folder, option, PAGE_FILES_WRITER, replace=True) as work:
        yield work, lambda relative: url_path(f"{folder.name}/{relative}") if relative else ""


def write_thumbnails(
    locations: list[str], folder: Path, size: int = 96, *, progress: Progress = no_progress
) -> list[str]:
    """A thumbnail (longest side `size`) of each image in `folder`, named by row (`000012.jpg`).

    Returns each one's path relative to `folder`'s parent (as a file path: `url_path` makes it an
    `<img src>`), or "" for an image unknown or unreadable (a page draws a grey tile there).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(max(len(locations) - 1, 0))))
    written: list[str] = []
    with progress(len(locations), "thumbnails") as on_progress:
        for row, location in enumerate(locations):
            name = f"{row:0{width}d}.jpg"
            written.append(f"{folder.name}/{name}" if _write_one(location, folder / name, size) else "")
            if on_progress is not None and (row % 256 == 255 or row == len(locations) - 1):
                on_progress(row + 1, len(locations))
    return written


def _write_one(location: str, target: Path, size: int) -> bool:
    """Whether a thumbnail of `location` was written to `target`."""
    if not location:
        return False
    try:
        img = load_image(location)
    except (DataError, OSError):
        return False
    fit(img, size).save(target, "JPEG", quality=JPEG_QUALITY)
    return True
