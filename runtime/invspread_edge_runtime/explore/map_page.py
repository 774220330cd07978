"""`invedge map`: a gallery's 2-D layout drawn as a PNG (points coloured by cluster or class folder, a
spread sample of thumbnails on top) and as one self-contained HTML page (pan, zoom, hover, and a click
that shows an item's nearest neighbours), its thumbnails in a `NAME_files/` folder beside it.

The page's script (static/map.js) draws from a plain data object (`page_data`), so `invedge serve`
shows the same map of its gallery with its own thumbnail URLs.
"""

from __future__ import annotations

import html as html_text
import json
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import bounds
from ..bounds import check_bounds
from ..errors import ConfigError, DataError, MissingDependency
from ..files import atomic_path, atomic_write_text, check_folder_target
from ..index.manage import Log, Progress, no_progress
from .layout2d import METHODS, Layout2D, layout_2d
from .thumbs import PAGE_FILES_WRITER, page_files, page_files_folder

if TYPE_CHECKING:
    from .items import ExploreItems

COLOR_BY = ("auto", "cluster", "class", "none")
DEFAULT_NEIGHBOURS = 8
DEFAULT_THUMBS = 2000
DEFAULT_THUMB_PX = 96
DEFAULT_CLUSTERS = 10  # the quick k-means's k when colouring by cluster without --clusters
QUICK_NITER = 10  # the quick k-means's iterations: enough to colour a map, not a clustering to report
PNG_PX = 1400  # the PNG's side
PNG_CELLS = 14  # the PNG's thumbnails: at most one per cell of a PNG_CELLS² grid over the map
# 20 colours told apart on white (Tableau's 10, then their light partners); more groups cycle
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
)  # fmt: skip
NONE_COLOUR = "#9a9a9a"


@dataclass
class MapOptions:
    """What `invedge map` draws and how; checks its own values."""

    out: Path | None = None  # the PNG
    html: Path | None = None  # the page
    method: str = "auto"
    seed: int = 0
    color_by: str = "auto"  # auto: the class folders when there are, else clusters
    clusters: Path | None = None  # `invedge cluster --out`'s folder, clusters.json or assignments.csv
    k: int = DEFAULT_CLUSTERS
    neighbours: int = DEFAULT_NEIGHBOURS
    thumbs: int = DEFAULT_THUMBS
    thumb: int = DEFAULT_THUMB_PX
    cache: bool = True
    locations: bool = False  # put each image's file path in the page (pages get shared: only when asked)

    def __post_init__(self) -> None:
        self.out, self.html, self.clusters = (
            Path(p) if p is not None else None for p in (self.out, self.html, self.clusters)
        )
        if self.method not in METHODS:
            raise ConfigError(
                f"--method {self.method} is not a layout method", f"Use one of: {', '.join(METHODS)}"
            )
        if self.color_by not in COLOR_BY:
            raise ConfigError(
                f"--color-by {self.color_by} is not known", f"Use one of: {', '.join(COLOR_BY)}"
            )
        check_bounds(
            {
                "k": bounds.CLUSTER_K,
                "neighbours": bounds.EXPLORE_NEIGHBOURS,
                "thumbs": bounds.MAP_THUMBS,
                "thumb": bounds.THUMB_PX,
                "seed": bounds.EXPLORE_SEED,
            },
            vars(self),
        )
        if self.clusters is not None and self.color_by not in ("auto", "cluster"):
            raise ConfigError(
                f"--clusters colours by cluster, but --color-by is {self.color_by}",
                "Leave out one of the two",
            )


@dataclass
class Colouring:
    """Each item's group (-1: none) and the groups' names, colours and sizes."""

    by: str  # "cluster", "class" or "none"
    groups: np.ndarray  # (N,) int32
    names: list[str]
    source: str = ""  # where the groups came from: "class folders", "k-means (k=10)", a file
    note: str = ""  # what the user should know: items a --clusters file does not name

    def legend(self) -> list[dict[str, Any]]:
        sizes = np.bincount(self.groups[self.groups >= 0], minlength=len(self.names))
        return [
            {"name": name, "colour": PALETTE[g % len(PALETTE)], "count": int(sizes[g])}
            for g, name in enumerate(self.names)
        ]


@dataclass
class MapResult:
    """What `invedge map` made: the layout, the colouring, and the files written."""

    source: str
    ids: list[str]
    layout: Layout2D
    colouring: Colouring
    png: Path | None = None
    html: Path | None = None
    thumbs_written: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        names = self.colouring.names
        return {
            "source": self.source,
            "count": len(self.ids),
            "layout": self.layout.to_dict(),
            "color_by": self.colouring.by,
            "groups_from": self.colouring.source,
            "legend": self.colouring.legend(),
            "png": str(self.png) if self.png else None,
            "html": str(self.html) if self.html else None,
            "thumbnails": self.thumbs_written,
            "seconds": round(self.seconds, 3),
            "points": [
                {
                    "id": item,
                    "x": round(float(x), 5),
                    "y": round(float(y), 5),
                    "group": names[g] if g >= 0 else None,
                }
                for item, (x, y), g in zip(
                    self.ids, self.layout.xy.tolist(), self.colouring.groups.tolist(), strict=True
                )
            ],
        }


def make_map(
    items: ExploreItems, options: MapOptions, *, progress: Progress = no_progress, log: Log | None = None
) -> MapResult:
    """The colouring (a --clusters file read first), the layout (cached), then the PNG and the page
    that `options` asks for; the outputs are checked before any of it. `log(line)` hears what is
    about to take long."""
    started = time.perf_counter()
    check_outputs(options, len(items))
    colouring = colour_items(items, options)
    layout = layout_2d(items, options.method, options.seed, progress, cache=options.cache, log=log)
    result = MapResult(items.source, list(items.ids), layout, colouring)
    if options.out is not None:
        result.png = write_png(options.out, items, layout.xy, colouring, options, _title(items, layout))
    if options.html is not None:
        result.html, result.thumbs_written = write_html(
            options.html, items, layout, colouring, options, progress
        )
    result.seconds = time.perf_counter() - started
    return result


def check_outputs(options: MapOptions, count: int | None = None) -> None:
    """Refuse, before any work, a page's `NAME_files/` folder that an earlier page did not write (a
    user's folder of that name is never replaced) and a page of more than MAP_PAGE_ITEMS items."""
    if options.html is None:
        return
    limit = int(bounds.MAP_PAGE_ITEMS.high)
    if count is not None and count > limit:
        raise ConfigError(
            f"--html takes at most {limit:,} items (a page's data is parsed whole by the browser); "
            f"the gallery holds {count:,}",
            "Draw it as a PNG (--out), or map a sample of it",
        )
    check_folder_target(page_files(options.html), "--html", PAGE_FILES_WRITER, replace=True)


# --- colours ------------------------------------------------------------------------------------------
def colour_items(items: ExploreItems, options: MapOptions) -> Colouring:
    """Groups by class folder, by the clusters of a file, by a quick k-means, or none."""
    count = len(items)
    by = options.color_by
    if by == "auto":
        by = "cluster" if options.clusters is not None or items.labels() is None else "class"
    if by == "none":
        return Colouring("none", np.full(count, -1, np.int32), [])
    if by == "class":
        labels = items.labels()
        if labels is None:
            raise ConfigError(
                f"{items.source} has no class folders to colour by (its images do not all lie in "
                "two or more sub-folders of one root)",
                "Use --color-by cluster or --color-by none",
            )
        names = sorted(set(labels))
        index = {name: g for g, name in enumerate(names)}
        return Colouring("class", np.array([index[x] for x in labels], np.int32), names, "class folders")
    if options.clusters is not None:
        return _clusters_from_file(options.clusters, list(items.ids))
    from .cluster import spherical_kmeans
    from .sheets import cluster_name

    k = min(options.k, count)
    if k <= 1:
        groups = np.zeros(count, np.int32)
    else:  # `invedge cluster`'s k-means, fewer iterations: enough to colour a map
        assigned, _ = spherical_kmeans(items.vectors, k, seed=options.seed, niter=QUICK_NITER)
        groups = assigned.astype(np.int32)
    return Colouring("cluster", groups, [cluster_name(g, k) for g in range(k)], f"k-means (k={k})")


def _clusters_from_file(path: Path, ids: list[str]) -> Colouring:
    """Each id's cluster from `invedge cluster`'s output (its folder, clusters.json or assignments.csv;
    -1 or an id it does not name: none), named as its contact sheets are."""
    from .cluster_files import read_assignments
    from .sheets import cluster_name

    found = read_assignments(path)
    if not any(item in found for item in ids):
        raise DataError(
            f"{path} names none of the {len(ids):,} items' ids",
            "Give --clusters the output of 'invedge cluster' on the same embeddings",
        )
    labels = sorted({c for c in found.values() if c >= 0})
    index = {c: g for g, c in enumerate(labels)}
    groups = np.array([index.get(found.get(item, -1), -1) for item in ids], np.int32)
    k = max(labels, default=0) + 1
    missing = sum(item not in found for item in ids)
    note = (
        f"{path} names {len(ids) - missing:,} of the {len(ids):,} items: the other {missing:,} "
        "are drawn ungrouped (was it clustered from other embeddings?)"
        if missing
        else ""
    )
    return Colouring("cluster", groups, [cluster_name(c, k) for c in labels], str(path), note)


# --- samples of thumbnails ---------------------------------------------------------------------------
def spread_sample(xy: np.ndarray, count: int, cells: int, seed: int = 0, *, fill: bool = True) -> np.ndarray:
    """Up to `count` rows spread over the map: the point nearest the centre of each occupied cell of a
    cells × cells grid (a seeded choice of them when there are more), then, with `fill`, other points
    at random up to `count`; sorted."""
    total = len(xy)
    if count >= total and fill:
        return np.arange(total)
    if count <= 0:
        return np.zeros(0, np.int64)
    cell = np.minimum((xy * cells).astype(np.int64), cells - 1)
    key = cell[:, 0] * cells + cell[:, 1]
    centre = (cell + 0.5) / cells
    distance = ((xy - centre) ** 2).sum(axis=1)
    order = np.lexsort((distance, key))
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    rng = np.random.default_rng(seed)
    if len(first) >= count:
        return np.sort(rng.choice(first, count, replace=False))
    if not fill:
        return np.sort(first)
    rest = np.setdiff1d(np.arange(total), first)
    extra = rng.choice(rest, count - len(first), replace=False)
    return np.sort(np.concatenate([first, extra]))


# --- the PNG ------------------------------------------------------------------------------------------
def write_png(
    out: Path, items: ExploreItems, xy: np.ndarray, colouring: Colouring, options: MapOptions, title: str
) -> Path:
    """Points coloured by group, and thumbnails of a spread sample (one per cell of the map), written
    atomically with matplotlib (Agg)."""
    plt = _pyplot()
    dpi = 100
    fig, ax = plt.subplots(figsize=(PNG_PX / dpi, PNG_PX / dpi), dpi=dpi)
    try:
        colours = np.array([*PALETTE, NONE_COLOUR])[
            np.where(colouring.groups >= 0, colouring.groups % len(PALETTE), len(PALETTE))
        ]
        size = max(2.0, min(24.0, 12_000 / max(len(xy), 1)))
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colours, linewidths=0, alpha=0.8, zorder=1)
        _draw_thumbs(ax, items, xy, colouring, min(options.thumbs, PNG_CELLS * PNG_CELLS), options.seed)
        margin = 0.5 / PNG_CELLS
        ax.set_xlim(-margin, 1 + margin)
        ax.set_ylim(-margin, 1 + margin)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=13)
        _draw_legend(ax, colouring)
        fig.tight_layout()
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return out


def _draw_thumbs(
    ax: Any, items: ExploreItems, xy: np.ndarray, colouring: Colouring, count: int, seed: int
) -> None:
    from matplotlib.patches import Rectangle

    half = 0.42 / PNG_CELLS
    for row in spread_sample(xy, count, PNG_CELLS, seed, fill=False):
        picture = _picture(items.locations[row])
        if picture is None:
            continue
        x, y = float(xy[row, 0]), float(xy[row, 1])
        ax.imshow(picture, extent=(x - half, x + half, y - half, y + half), zorder=3, interpolation="nearest")
        g = int(colouring.groups[row])
        colour = PALETTE[g % len(PALETTE)] if g >= 0 else NONE_COLOUR
        ax.add_patch(
            Rectangle(
                (x - half, y - half),
                2 * half,
                2 * half,
                fill=False,
                edgecolor=colour,
                linewidth=1.5,
                zorder=4,
            )
        )


def _picture(location: str) -> np.ndarray | None:
    """The image at `location` as RGB pixels (128 px its longer side), or None when unknown or unreadable."""
    from ..preprocess import load_image
    from ..search.grid import fit

    if not location:
        return None
    try:
        img = load_image(location)  # 8-bit RGB
    except (DataError, OSError):
        return None
    return np.asarray(fit(img, 128))


def _draw_legend(ax: Any, colouring: Colouring) -> None:
    from matplotlib.lines import Line2D

    legend = colouring.legend()
    if not legend or len(legend) > 2 * len(PALETTE):
        return
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color=entry["colour"],
            label=f"{entry['name']} ({entry['count']})",
        )
        for entry in legend
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependency("matplotlib", "The map's PNG (--out)", "pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(items: ExploreItems, layout: Layout2D) -> str:
    return f"{items.source}: {len(items):,} items ({layout.method})"


# --- the page -----------------------------------------------------------------------------------------
def page_data(
    ids: list[str],
    xy: np.ndarray,
    *,
    thumbs: list[str] | None = None,
    colouring: Colouring | None = None,
    neighbours: Any = None,
    locations: list[str] | None = None,
    title: str = "",
    subtitle: str = "",
) -> dict[str, Any]:
    """The data object static/map.js draws (`InvedgeMap.render(container, data)`), as plain JSON values;
    `neighbours`: explore.neighbours.Neighbours (or None: the host page answers them itself)."""
    data: dict[str, Any] = {
        "title": title,
        "subtitle": subtitle,
        "ids": list(ids),
        "xy": [round(float(v), 5) for v in np.asarray(xy, np.float32).reshape(-1)],
        "thumbs": thumbs,
        "groups": colouring.groups.tolist() if colouring is not None and colouring.names else None,
        "legend": colouring.legend() if colouring is not None else None,
        "neighbours": None,
        "locations": locations,
    }
    if neighbours is not None:
        data["neighbours"] = {
            "indices": neighbours.indices.tolist(),
            "scores": np.round(neighbours.scores.astype(np.float64), 4).tolist(),
        }
    return data


def static_text(name: str) -> str:
    """A file of static/ (map.js, map.css) as text: inlined in the page, served by `invedge serve`."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def write_html(
    html: Path,
    items: ExploreItems,
    layout: Layout2D,
    colouring: Colouring,
    options: MapOptions,
    progress: Progress = no_progress,
) -> tuple[Path, int]:
    """The page and its `NAME_files/` thumbnails folder (made aside, then swapped in whole); returns the
    page and how many thumbnails it has. Image paths go in the page only with `options.locations`."""
    from .neighbours import nearest

    count = len(items)
    k = min(options.neighbours, count - 1)
    found = nearest(np.asarray(items.vectors, np.float32), k, progress=progress) if k > 0 else None
    sample = spread_sample(
        layout.xy, options.thumbs, max(1, math.isqrt(max(options.thumbs, 1))), options.seed
    )
    thumbs = _thumbnails(html, [items.locations[row] for row in sample], options.thumb, progress)
    written = sum(1 for path in thumbs if path)
    per_item = [""] * count
    for row, path in zip(sample.tolist(), thumbs, strict=True):
        per_item[row] = path
    data = page_data(
        items.ids,
        layout.xy,
        thumbs=per_item,
        colouring=colouring,
        neighbours=found,
        locations=list(items.locations) if options.locations and any(items.locations) else None,
        title=f"Map of {items.source}",
        subtitle=page_subtitle(count, layout, colouring),
    )
    atomic_write_text(html, render_page(data))
    return html, written


def _thumbnails(html: Path, locations: list[str], size: int, progress: Progress) -> list[str]:
    """JPEG thumbnails of `locations` in the page's `NAME_files/` (replaced whole, and only when an
    earlier page wrote it), each as its URL-quoted `<img src>` ("" for an image not made)."""
    from .thumbs import write_thumbnails

    with page_files_folder(html, "--html") as (work, src):
        made = write_thumbnails(locations, work / "thumbs", size, progress=progress)  # "thumbs/…"
    return [src(path) for path in made]


def page_subtitle(count: int, layout: Layout2D, colouring: Colouring) -> str:
    """The line under the map's title: "500 items, umap layout, coloured by class folder"."""
    coloured = {"class": "coloured by class folder", "cluster": f"coloured by {colouring.source}"}.get(
        colouring.by, ""
    )
    return ", ".join(part for part in (f"{count:,} items", f"{layout.method} layout", coloured) if part)


def render_page(data: dict[str, Any]) -> str:
    """One self-contained HTML page: map.css and map.js inlined, `data` as JSON; no network."""
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    title = html_text.escape(data.get("title") or "Map")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<style>\nhtml, body {{ margin: 0; height: 100%; }}\n{static_text('map.css')}</style>\n</head>\n"
        '<body data-state="loading">\n<div id="map"></div>\n'
        f'<script type="application/json" id="map-data">{payload}</script>\n'
        f"<script>\n{static_text('map.js')}</script>\n"
        "<script>\n"
        'window.invedgeMap = InvedgeMap.render(document.getElementById("map"), '
        'JSON.parse(document.getElementById("map-data").textContent));\n'
        'document.body.dataset.state = "ready";\n'
        "</script>\n</body>\n</html>\n"
    )
