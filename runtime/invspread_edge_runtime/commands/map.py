"""`invedge map`: a 2-D map of a gallery (UMAP, t-SNE or PCA) as a PNG with thumbnails and an HTML page."""

from __future__ import annotations

from pathlib import Path

import typer

from .. import bounds
from ..bounds import helped
from .options import CollectionOpt, JsonOpt, StoreOpt, TargetArg


def register(app: typer.Typer) -> None:
    """Adds the verb to `invedge`."""
    app.command("map")(map_command)


def map_command(
    target: str | None = TargetArg,
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="The map as a PNG: points coloured by group, thumbnails on top.",
        show_default=False,
    ),
    html: Path | None = typer.Option(
        None,
        "--html",
        help="The map as one HTML page (pan, zoom, hover, click for neighbours); thumbnails in NAME_files/.",
        show_default=False,
    ),
    method: str = typer.Option(
        "auto",
        "--method",
        help="umap (umap-learn), tsne (scikit-learn), pca (numpy, instant), or auto: umap where installed, "
        "else t-SNE up to 5 000 items (--method tsne beyond that runs, slowly), else PCA.",
    ),
    color_by: str = typer.Option(
        "auto",
        "--color-by",
        help="class (the images' class sub-folders), cluster (--clusters, or a quick k-means), none; "
        "auto: class where there are class folders, else cluster.",
    ),
    clusters: Path | None = typer.Option(
        None,
        "--clusters",
        help="The --out folder of 'invedge cluster' (or its clusters.json or assignments.csv) to colour by.",
        show_default=False,
    ),
    k: int = typer.Option(
        10,
        "--k",
        help=helped(
            "Colour by a quick k-means with this many clusters (without --clusters).", bounds.CLUSTER_K
        ),
    ),
    neighbours: int = typer.Option(
        8,
        "--neighbours",
        help=helped("Nearest neighbours the page shows for a clicked item.", bounds.EXPLORE_NEIGHBOURS),
    ),
    thumbs: int = typer.Option(
        2000,
        "--thumbs",
        help=helped("Thumbnails in the page (a spread sample when there are more items).", bounds.MAP_THUMBS),
    ),
    thumb: int = typer.Option(96, "--thumb", help=helped("A thumbnail's side in pixels.", bounds.THUMB_PX)),
    seed: int = typer.Option(
        0,
        "--seed",
        help=helped("Seed of the layout, the k-means and the thumbnails' sample.", bounds.EXPLORE_SEED),
    ),
    cache: bool = typer.Option(
        True,
        "--cache/--no-cache",
        help="Read and keep the layout in the cache ($INVEDGE_CACHE_DIR/maps, else "
        "~/.cache/invspread-edge/maps).",
    ),
    locations: bool = typer.Option(
        False,
        "--locations",
        help="Put each image's file path in the page (shown for the selected item). Off by default: "
        "pages get shared, and paths tell about the machine.",
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Draw a 2-D map of a gallery: a PNG (--out) and/or a page to explore it (--html).

    The layout is cached per embeddings checksum, so a second map of the same items is instant.
    """
    from .. import console
    from ..errors import ConfigError
    from ..explore.items import open_items
    from ..explore.layout2d import TSNE_LIMIT
    from ..explore.map_page import MapOptions, check_outputs, make_map
    from .options import progress_bar, writable_output

    options = MapOptions(
        out=out,
        html=html,
        method=method,
        seed=seed,
        color_by=color_by,
        clusters=clusters,
        k=k,
        neighbours=neighbours,
        thumbs=thumbs,
        thumb=thumb,
        cache=cache,
        locations=locations,
    )
    if out is None and html is None and not json_out:
        raise ConfigError("nothing to write", "Give --out MAP.png, --html MAP.html or --json")
    for path, option in ((out, "--out"), (html, "--html")):
        if path is not None:
            writable_output(path, option)
    check_outputs(options)  # the page's NAME_files/ folder, before the items are read
    items = open_items(target, store, collection)
    if method == "tsne" and len(items) > TSNE_LIMIT:
        console.warn(f"t-SNE of {len(items):,} items (above {TSNE_LIMIT:,}) may take many minutes")
    result = make_map(items, options, progress=progress_bar, log=console.info)
    if result.colouring.note:
        console.warn(result.colouring.note)
    if json_out:
        console.print_json(result.to_dict())
    layout = result.layout
    how = "from cache" if layout.from_cache else f"in {layout.seconds:.1f} s"
    if layout.note:
        console.info(layout.note)
    written = [str(p) for p in (result.png, result.html) if p is not None]
    console.success(
        f"map of {len(result.ids):,} items ({layout.method} layout {how})"
        + (f" → {', '.join(written)}" if written else "")
    )
