"""`invedge select` (a diverse subset to label first) and `invedge outliers` (the least typical items)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .. import bounds
from ..bounds import helped
from .options import CollectionOpt, ExactOpt, JsonOpt, StoreOpt, TargetArg, existing

if TYPE_CHECKING:
    from ..explore.items import ExploreItems

TABLE_ROWS = 20  # rows printed; --out holds them all

GridOpt = typer.Option(
    None,
    "--grid",
    help="A PNG contact sheet of the items in rank order (the first 1 000).",
    show_default=False,
)
ThumbOpt = typer.Option(
    96, "--thumb", help=helped("Tile side in the --grid picture, in pixels.", bounds.THUMB_PX)
)


def register(app: typer.Typer) -> None:
    """Adds the verbs to `invedge`."""
    app.command("select")(select_command)
    app.command("outliers")(outliers_command)


def select_command(
    target: str | None = TargetArg,
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    count: int = typer.Option(
        ..., "--count", "-n", help=helped("Items to select.", bounds.SELECT_COUNT), show_default=False
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="The selection in pick order: .txt (ids), .csv (with distances) or .json.",
        show_default=False,
    ),
    grid: Path | None = GridOpt,
    curve: Path | None = typer.Option(
        None,
        "--curve",
        help="A PNG of the coverage reached (largest and mean distance to the nearest pick) vs items picked.",
        show_default=False,
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        help=helped("Start from a seeded random item instead of the most typical one.", bounds.EXPLORE_SEED),
        show_default=False,
    ),
    exclude_duplicates: float | None = typer.Option(
        None,
        "--exclude-duplicates",
        help=helped(
            "Near-duplicates from this cosine on (as 'invedge dedup --threshold'): only one item per group "
            "may be selected.",
            bounds.EXCLUDE_DUPLICATES,
        ),
        show_default=False,
    ),
    already: Path | None = typer.Option(
        None,
        "--already",
        help="Ids selected (labelled) before: a .txt (one per line), or the .csv/.json of an earlier "
        "--out. They count as picks; the new ones cover what they do not.",
        show_default=False,
    ),
    exact: bool | None = ExactOpt,
    thumb: int = ThumbOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Pick a diverse subset to label first: greedy farthest-point (k-center) over the embeddings.

    Each pick is the item farthest (cosine) from all picked before it; the coverage reached is reported.
    """
    from .. import console
    from ..explore.ranked import read_ids
    from ..explore.select import SelectOptions, select_items, write_curve
    from .options import progress_bar

    before = tuple(read_ids(existing(already, "--already file"))) if already is not None else ()
    options = SelectOptions(
        count=count, seed=seed, exclude_duplicates=exclude_duplicates, exact=exact, already=before
    )
    _check_outputs(out, grid, thumb, count, curve=curve)
    items = _open(target, store, collection)
    picked = select_items(items, options, log=console.info, progress=progress_bar)
    whole = picked.to_dict()
    rows = whole["selected"]
    _write(out, grid, thumb, rows, whole, "distance", "d")
    if curve is not None:
        write_curve(picked, curve)
    for note in picked.notes:
        console.info(note)
    if json_out:
        console.print_json(whole)
    else:
        _table(rows, "distance", "distance to earlier picks")
    excluded = f", {picked.excluded:,} near-duplicates left out" if picked.excluded else ""
    console.success(
        f"selected {len(picked):,} of {picked.total:,} items{excluded}: every item within cosine distance "
        f"{picked.coverage_max:.3f} of a selected one (mean {picked.coverage_mean:.3f}), "
        f"in {picked.seconds:.1f} s{_written(out, grid, curve)}"
    )


def outliers_command(
    target: str | None = TargetArg,
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    count: int = typer.Option(
        ...,
        "--count",
        "-n",
        help=helped("Items to report, the least typical first.", bounds.OUTLIER_COUNT),
        show_default=False,
    ),
    neighbours: int | None = typer.Option(
        None,
        "--neighbours",
        "-k",
        help=helped(
            "Uniqueness: 1 − the mean cosine to this many nearest items [default: 10, or all the others "
            "in a smaller gallery].",
            bounds.EXPLORE_NEIGHBOURS,
        ),
        show_default=False,
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="The outliers, the least typical first: .txt (ids), .csv (with scores) or .json.",
        show_default=False,
    ),
    grid: Path | None = GridOpt,
    exact: bool | None = ExactOpt,
    thumb: int = ThumbOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The least typical items: highest uniqueness (1 − mean cosine to the k nearest others) first."""
    from .. import console
    from ..explore.uniqueness import OutlierOptions, find_outliers
    from .options import progress_bar

    options = OutlierOptions(count=count, neighbours=neighbours, exact=exact)
    _check_outputs(out, grid, thumb, count)
    items = _open(target, store, collection)
    odd = find_outliers(items, options, progress=progress_bar)
    whole = odd.to_dict()
    rows = [_flat_outlier(row) for row in whole["outliers"]]
    _write(out, grid, thumb, rows, whole, "uniqueness", "u")
    for note in odd.notes:
        console.info(note)
    if json_out:
        console.print_json(whole)
    else:
        _table(rows, "uniqueness", "uniqueness", nearest=True)
    console.success(
        f"{len(odd):,} least typical of {odd.total:,} items (uniqueness over {odd.neighbours} neighbours; "
        f"median of all {odd.median:.3f}) in {odd.seconds:.1f} s{_written(out, grid)}"
    )


def _flat_outlier(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row: the nearest item's id and cosine as their own columns."""
    near = row["nearest"] or {}
    return {k: v for k, v in row.items() if k != "nearest"} | {
        "nearest_id": near.get("id"),
        "nearest_score": near.get("score"),
    }


def _check_outputs(
    out: Path | None, grid: Path | None, thumb: int, count: int, *, curve: Path | None = None
) -> None:
    """Every output path and the tile size refused now, before any work; a --grid of more items than
    it draws is said now too."""
    from .. import console
    from ..bounds import check_bounds
    from ..explore.ranked import check_out_suffix, grid_note
    from .options import writable_output

    check_bounds({"thumb": bounds.THUMB_PX}, {"thumb": thumb})
    if out is not None:
        check_out_suffix(out)
        writable_output(out, "--out")
    for path, option in ((grid, "--grid"), (curve, "--curve")):
        if path is not None:
            writable_output(path, option)
    if grid is not None and (note := grid_note(count)):
        console.info(note)


def _open(target: str | None, store: str | None, collection: str | None) -> ExploreItems:
    from ..explore.items import open_items

    return open_items(target, store, collection)


def _write(
    out: Path | None,
    grid: Path | None,
    thumb: int,
    rows: list[dict[str, Any]],
    whole: dict[str, Any],
    score: str,
    short: str,
) -> None:
    from ..explore.ranked import file_name, ranked_grid, write_ranked

    if out is not None:
        write_ranked(out, rows, whole)
    if grid is not None:
        subcaptions = [
            f"#{row['rank']} {short} {row[score]:.3f}" if row[score] is not None else f"#{row['rank']}"
            for row in rows
        ]
        ranked_grid(
            [row["location"] for row in rows],
            [file_name(row["id"]) for row in rows],
            subcaptions,
            grid,
            thumb,
        )


def _table(rows: list[dict[str, Any]], score: str, heading: str, *, nearest: bool = False) -> None:
    from rich.table import Table

    from .. import console

    table = Table(show_lines=False)
    table.add_column("rank", justify="right")
    table.add_column("id", overflow="fold")
    table.add_column(heading, justify="right")
    if nearest:
        table.add_column("nearest", overflow="fold")
        table.add_column("cos", justify="right")
    for row in rows[:TABLE_ROWS]:
        extra = [row["nearest_id"] or "", _score(row["nearest_score"])] if nearest else []
        table.add_row(str(row["rank"]), row["id"], _score(row[score]), *extra)
    console.print_table(table, min_width=120)
    if len(rows) > TABLE_ROWS:
        console.info(f"… and {len(rows) - TABLE_ROWS:,} more (--out FILE lists them all)")


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _written(*paths: Path | None) -> str:
    shown = [str(p) for p in paths if p is not None]
    return f" → {', '.join(shown)}" if shown else ""
