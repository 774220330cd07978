"""`invedge dedup`: groups of near-duplicate images, a report of them, and an undoable move of the copies."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .. import bounds
from ..bounds import helped
from .options import CollectionOpt, ExactOpt, JsonOpt, StoreOpt, TargetArg

if TYPE_CHECKING:
    from ..explore.dedup import DuplicateGroups
    from ..explore.moves import MoveResult

SHOWN = 20  # groups listed in the table (all are in --json and --out)
OUT_SUFFIXES = (".json", ".csv")


def register(app: typer.Typer) -> None:
    """Adds the verb to `invedge`."""
    app.command("dedup")(dedup)


def dedup(
    target: str | None = TargetArg,
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    threshold: str = typer.Option(
        "0.95",
        "--threshold",
        help=helped(
            "The cosine score from which two images are duplicates, or auto: the valley between the "
            "mode of copies and the rest in the histogram of nearest-neighbour scores.",
            bounds.DUP_THRESHOLD,
        ),
    ),
    keep: str = typer.Option(
        "first",
        "--keep",
        help="Which image of a group to keep: first (in the gallery's order), largest (pixels, then "
        "bytes) or sharpest (variance of the Laplacian).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the groups to FILE.json or FILE.csv.", show_default=False
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Write an HTML page of the groups with thumbnails (beside it: a NAME_files/ folder).",
        show_default=False,
    ),
    histogram: Path | None = typer.Option(
        None,
        "--histogram",
        help="Write a PNG of the nearest-neighbour scores, to choose --threshold from.",
        show_default=False,
    ),
    move_to: Path | None = typer.Option(
        None,
        "--move-to",
        help="Move every image but the kept one of each group into this new folder (paths kept; "
        "a manifest there lets --undo put them back). Never deletes.",
        show_default=False,
    ),
    undo: Path | None = typer.Option(
        None,
        "--undo",
        help="Put back the images an earlier --move-to moved: give its invedge-moves.json (or the folder).",
        show_default=False,
    ),
    exact: bool | None = ExactOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Find near-duplicate images: groups of images whose embeddings score at or above --threshold.

    Prints the groups (the kept image first); --out, --report and --histogram write them, --move-to
    moves the copies out of the way (undo with --undo DIR/invedge-moves.json).
    """
    from .. import console
    from ..explore.dedup import AUTO, check_keep, parse_threshold
    from ..explore.items import open_items
    from ..explore.moves import check_move_target, check_outside_root, items_root
    from .options import progress_bar

    if undo is not None:
        _undo(undo, target, store, json_out)
        return
    wanted = parse_threshold(threshold)
    check_keep(keep)
    _check_outputs(out, report, histogram)
    if move_to is not None:
        check_move_target(move_to)
    items = open_items(target, store, collection)
    if move_to is not None:
        check_outside_root(move_to, items_root(items))
    want_histogram = wanted == AUTO or histogram is not None or report is not None
    found = _found(items, wanted, keep, exact, want_histogram, histogram)
    written = _write(found, out, report, histogram)
    moved = None
    if move_to is not None:
        from ..explore.moves import move_duplicates

        moved = move_duplicates(found, move_to, progress=progress_bar)
    if json_out:
        extra = {"written": written} | ({"moves": moved.to_dict()} if moved else {})
        console.print_json(found.to_dict() | extra)
        return
    _report(found, written, moved)


def _found(items, wanted, keep: str, exact: bool | None, want_histogram: bool, histogram: Path | None):
    """find_duplicates; where auto finds no valley, the histogram is written first, for the error to name."""
    from ..explore.dedup import NoValleyError, draw_histogram, find_duplicates
    from .options import progress_bar

    try:
        return find_duplicates(
            items, wanted, keep, exact=exact, histogram=want_histogram, progress=progress_bar
        )
    except NoValleyError as exc:
        import tempfile

        if exc.histogram is None:
            raise
        where = histogram or Path(tempfile.gettempdir()) / f"invedge-nn-histogram-{items.checksum[:12]}.png"
        draw_histogram(exc.histogram, where)
        raise NoValleyError(exc.histogram, where) from None


def _check_outputs(out: Path | None, report: Path | None, histogram: Path | None) -> None:
    """Every output writable, before the work: a bad path is found now, not after minutes."""
    from ..errors import ConfigError
    from ..explore.report import check_report
    from .options import writable_output

    if out is not None:
        if out.suffix.lower() not in OUT_SUFFIXES:
            raise ConfigError(f"--out {out} is neither .json nor .csv", "Give --out FILE.json or FILE.csv")
        writable_output(out, "--out")
    if report is not None:
        if report.suffix.lower() not in (".html", ".htm"):
            raise ConfigError(f"--report {report} is not an .html file", "Give --report FILE.html")
        writable_output(report, "--report")
        check_report(report)
    if histogram is not None:
        if histogram.suffix.lower() != ".png":
            raise ConfigError(f"--histogram {histogram} is not a .png file", "Give --histogram FILE.png")
        writable_output(histogram, "--histogram")


def _write(
    found: DuplicateGroups, out: Path | None, report: Path | None, histogram: Path | None
) -> dict[str, str]:
    from ..explore.dedup import draw_histogram
    from ..explore.report import write_report
    from .options import progress_bar

    written: dict[str, str] = {}
    if out is not None:
        _write_groups(found, out)
        written["out"] = str(out)
    if histogram is not None and found.histogram is not None:
        draw_histogram(found.histogram, histogram, found.threshold)
        written["histogram"] = str(histogram)
    if report is not None:
        write_report(found, report, progress=progress_bar)
        written["report"] = str(report)
    return written


def _write_groups(found: DuplicateGroups, out: Path) -> None:
    """--out: the --json answer as FILE.json, or one row per member as FILE.csv."""
    import csv
    import io

    from ..files import atomic_write_json, atomic_write_text

    if out.suffix.lower() == ".json":
        atomic_write_json(out, found.to_dict())
        return
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["group", "id", "location", "score", "kept"])
    for number, group in enumerate(found.groups, 1):
        for member in found.member_dicts(group):
            writer.writerow(
                [number, member["id"], member["location"], f"{member['score']:.6f}", int(member["kept"])]
            )
    atomic_write_text(out, text.getvalue())


def _report(found: DuplicateGroups, written: dict[str, str], moved: MoveResult | None) -> None:
    from rich.table import Table

    from .. import console
    from ..explore.report import SCORE_NOTE

    counts = found.to_dict()["counts"]
    if found.histogram is not None:
        shares = found.histogram.quantiles()
        console.info(
            "nearest-neighbour scores: "
            + ", ".join(f"{share:.1%} ≥ {mark}" for mark, share in shares.items())
        )
    if found.groups:
        table = Table(box=None)
        for column in ("group", "images", "kept", "others (score)"):
            table.add_column(column)
        for number, group in enumerate(found.groups[:SHOWN], 1):
            members = found.member_dicts(group)
            others = ", ".join(f"{m['id']} ({m['score']:.3f})" for m in members[1:4])
            more = f", … {len(members) - 4} more" if len(members) > 4 else ""
            table.add_row(str(number), str(len(members)), members[0]["id"], others + more)
        console.out.print(table)
        console.info(SCORE_NOTE)
        if len(found.groups) > SHOWN:
            console.info(
                f"… {len(found.groups) - SHOWN} more groups (all of them: --out FILE.json or --json)"
            )
    chosen = " (auto)" if found.chosen == "auto" else ""
    console.success(
        f"{_count(counts['groups'], 'group')} of near-duplicates ({_count(counts['duplicates'], 'image')} "
        f"beyond the one kept) among {len(found.items):,} at threshold {found.threshold:.4f}{chosen}"
    )
    for what, path in written.items():
        console.info(f"{what}: {path}")
    if moved is not None:
        console.success(
            f"moved {_count(len(moved.moved), 'image')}; undo: invedge dedup --undo {moved.manifest}"
        )


def _undo(manifest: Path, target: str | None, store: str | None, json_out: bool) -> None:
    from .. import console
    from ..errors import ConfigError, InvedgeError
    from ..explore.moves import MANIFEST_NAME, undo_moves
    from .options import existing, progress_bar

    if manifest.is_dir():  # the --move-to folder itself
        manifest = manifest / MANIFEST_NAME
    if target is not None or store is not None:
        raise ConfigError(
            "--undo takes only the manifest", "Run: invedge dedup --undo DIR/invedge-moves.json"
        )
    result = undo_moves(existing(manifest, "moves manifest"), progress=progress_bar)
    if json_out:
        console.print_json(result.to_dict())
    for line in result.left:
        console.warn(line)
    if result.left:
        raise InvedgeError(
            f"moved {_count(len(result.moved), 'image')} back; {len(result.left):,} "
            f"{'was' if len(result.left) == 1 else 'were'} left where they are",
            "See the lines above; once resolved, run the same --undo again",
        )
    console.success(f"moved {_count(len(result.moved), 'image')} back to where they were")


def _count(n: int, noun: str) -> str:
    """'1 image', '2 images', '1,000 images'."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
