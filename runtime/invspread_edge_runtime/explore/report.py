"""The HTML report of `invedge dedup --report`: one self-contained page and a `NAME_files/` folder
beside it (thumbnails, the histogram). No script, no network, no CDN: it opens from a disk, a
share or an archive as it is."""

from __future__ import annotations

import html
from pathlib import Path

from ..files import atomic_write_text, check_folder_target
from ..index.manage import Progress, no_progress
from .dedup import DuplicateGroups, draw_histogram
from .thumbs import PAGE_FILES_WRITER, page_files, page_files_folder, write_thumbnails

MAX_GROUPS_SHOWN = 1000  # beyond this the page would be slow to open; every group is in --out
SCORE_NOTE = (
    "Each score is the cosine to the group's kept image: it can be below the threshold, since a group "
    "joins images through any pair that scores at or above it."
)
THUMB_PX = 128

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
.summary { color: #444; margin: 0 0 12px; }
.histogram { max-width: 100%; border: 1px solid #ddd; background: #fff; }
.group { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 12px 0; padding: 8px 12px; }
.group h2 { font-size: 14px; margin: 0 0 6px; color: #555; }
.members { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 136px; }
figure img, figure .missing { width: 128px; height: 128px; object-fit: contain; background: #eee;
  border: 3px solid transparent; display: block; }
figure .missing { background: #c8c8c8; }
figure.kept img, figure.kept .missing { border-color: #2e8b57; }
figcaption { font-size: 11px; word-break: break-all; color: #333; }
figcaption .score { color: #666; }
figcaption .tag { color: #2e8b57; font-weight: 600; }
.note { color: #a05a00; }
"""


def check_report(out: Path) -> None:
    """Refuse, before any work, a report whose `NAME_files/` folder exists and is not an earlier
    page's (a user's folder of that name is never replaced)."""
    check_folder_target(page_files(Path(out)), "--report", PAGE_FILES_WRITER, replace=True)


def write_report(
    found: DuplicateGroups, out: Path, *, thumb: int = THUMB_PX, progress: Progress = no_progress
) -> Path:
    """Write the page `out` and its `NAME_files/` folder (replaced whole, once the new one is made)."""
    out = Path(out)
    shown = found.groups[:MAX_GROUPS_SHOWN]
    rows = [row for group in shown for row in group.members]
    with page_files_folder(out, "--report") as (work, src):
        thumbs = write_thumbnails(
            [found.items.locations[row] for row in rows], work / "thumbs", thumb, progress=progress
        )
        histogram = None
        if found.histogram is not None:
            draw_histogram(found.histogram, work / "histogram.png", found.threshold)
            histogram = src("histogram.png")
    sources = {row: src(path) for row, path in zip(rows, thumbs, strict=True)}
    atomic_write_text(out, page(found, sources, histogram))
    return out


def page(found: DuplicateGroups, sources: dict[int, str], histogram: str | None) -> str:
    """The report's HTML: a summary, the histogram, then each group (the kept image first)."""
    e = html.escape
    counts = found.to_dict()["counts"]
    how = "exact" if found.exact else "approximate (HNSW)"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Near-duplicates in {e(found.items.source)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Near-duplicates in {e(found.items.source)}</h1>",
        '<p class="summary">'
        f'<span id="group-count">{counts["groups"]}</span> groups · '
        f'<span id="duplicate-count">{counts["duplicates"]}</span> duplicates to remove of '
        f"{len(found.items)} images · threshold {found.threshold:.4f} ({found.chosen}) · "
        f"keep {e(found.keep)} · {how} search</p>",
    ]
    if histogram:
        parts.append(
            f'<img class="histogram" src="{e(histogram)}" alt="histogram of nearest-neighbour scores">'
        )
    if len(found.groups) > MAX_GROUPS_SHOWN:
        parts.append(
            f'<p class="note">The first {MAX_GROUPS_SHOWN} of {len(found.groups)} groups are shown '
            "(largest first); every group is in the JSON or CSV of --out.</p>"
        )
    if not found.groups:
        parts.append("<p>No two images score at or above the threshold.</p>")
    else:
        parts.append(f'<p class="note">{SCORE_NOTE}</p>')
    for number, group in enumerate(found.groups[:MAX_GROUPS_SHOWN], 1):
        parts.append(
            f'<section class="group" data-group="{number}"><h2>Group {number} · '
            f'{len(group.members)} images</h2><div class="members">'
        )
        for row, member in zip(group.members, found.member_dicts(group), strict=True):
            parts.append(_figure(member, sources.get(row, "")))
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _figure(member: dict, source: str) -> str:
    """One image: its thumbnail (a grey tile when unreadable), id, score to the kept one."""
    e = html.escape
    title = e(member["location"] or member["id"])
    picture = (
        f'<img src="{e(source)}" alt="{e(member["id"])}" title="{title}" loading="lazy">'
        if source
        else f'<div class="missing" title="{title}"></div>'
    )
    tag = (
        '<span class="tag">kept</span>'
        if member["kept"]
        else f'<span class="score">{member["score"]:.4f}</span>'
    )
    kind = "member kept" if member["kept"] else "member"
    return f'<figure class="{kind}">{picture}<figcaption>{e(member["id"])}<br>{tag}</figcaption></figure>'
