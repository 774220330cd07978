"""`invedge cluster`: groups in a gallery (k-means or HDBSCAN), as files, contact sheets and links."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .. import bounds
from ..bounds import helped
from .options import CollectionOpt, JsonOpt, StoreOpt, TargetArg

if TYPE_CHECKING:
    from ..explore.cluster import Clustering

SHOWN = 20  # clusters listed in the table (all are in --json and --out)


def register(app: typer.Typer) -> None:
    """Adds the verb to `invedge`."""
    app.command("cluster")(cluster)


def cluster(
    target: str | None = TargetArg,
    store: str | None = StoreOpt,
    collection: str | None = CollectionOpt,
    k: str = typer.Option(
        "auto",
        "--k",
        help=helped(
            "k-means clusters, or auto: the k of 2..--k-max with the best cosine silhouette on --sample items.",
            bounds.CLUSTER_K,
        ),
    ),
    method: str = typer.Option(
        "kmeans",
        "--method",
        help="kmeans (faiss; numpy without it), or hdbscan (scikit-learn: finds the number of clusters "
        "from density and leaves items in no dense region unassigned, as noise).",
    ),
    k_max: int = typer.Option(
        30, "--k-max", help=helped("--k auto: the largest k tried.", bounds.CLUSTER_K_MAX)
    ),
    sample: int = typer.Option(
        5000,
        "--sample",
        help=helped("--k auto: items the silhouette is computed on.", bounds.SILHOUETTE_SAMPLE),
    ),
    min_cluster_size: int = typer.Option(
        5,
        "--min-cluster-size",
        help=helped("hdbscan: the smallest group that is a cluster.", bounds.MIN_CLUSTER_SIZE),
    ),
    niter: int = typer.Option(25, "--niter", help=helped("k-means iterations.", bounds.CLUSTER_NITER)),
    seed: int = typer.Option(
        0, "--seed", help=helped("Seed of the k-means and the sample.", bounds.EXPLORE_SEED)
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="A new folder for assignments.csv, clusters.json, a contact sheet per cluster (sheets/) and summary.png.",
        show_default=False,
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier --out folder of invedge cluster."
    ),
    link_to: Path | None = typer.Option(
        None,
        "--link-to",
        help="A new folder with a folder of links to the images per cluster (cluster_000/, …, noise/).",
        show_default=False,
    ),
    per_sheet: int = typer.Option(
        48, "--per-sheet", help=helped("Images on each contact sheet.", bounds.PER_SHEET)
    ),
    thumb: int = typer.Option(96, "--thumb", help=helped("A thumbnail's side in pixels.", bounds.THUMB_PX)),
    json_out: bool = JsonOpt,
) -> None:
    """Group a gallery's images: k-means (k given or auto) or HDBSCAN.

    Prints each cluster's size and most typical image; with class sub-folders under the images'
    root, NMI and ARI against them. --out writes the clusters as files and contact sheets,
    --link-to a folder of links per cluster, ready to name and label.
    """
    from .. import console
    from ..bounds import check_bounds
    from ..explore.cluster import ClusterOptions, cluster_items, parse_k
    from ..explore.cluster_files import check_out_folder, write_cluster_folder
    from ..explore.items import open_items
    from ..explore.links import check_link_folder, link_clusters
    from .options import progress_bar

    options = ClusterOptions(
        k=parse_k(k),
        method=method,
        k_max=k_max,
        sample=sample,
        min_cluster_size=min_cluster_size,
        niter=niter,
        seed=seed,
    )
    check_bounds(
        {"per_sheet": bounds.PER_SHEET, "thumb": bounds.THUMB_PX}, {"per_sheet": per_sheet, "thumb": thumb}
    )
    if out is not None:
        check_out_folder(out, overwrite)
    if link_to is not None:
        check_link_folder(link_to)
    items = open_items(target, store, collection)
    found = cluster_items(items, options, progress=progress_bar)
    written: dict = {}
    if out is not None:
        files = write_cluster_folder(
            found, out, overwrite=overwrite, per_sheet=per_sheet, thumb=thumb, progress=progress_bar
        )
        written["out"] = {"folder": str(out)} | files
    if link_to is not None:
        written["links"] = link_clusters(found, link_to, progress=progress_bar).to_dict()
    if json_out:
        console.print_json(found.to_dict() | {"written": written})
        return
    _report(found, written)


def _report(found: Clustering, written: dict) -> None:
    from rich.table import Table

    from .. import console

    table = Table(box=None)
    for column in ("cluster", "items", "most typical"):
        table.add_column(column)
    for c, size in enumerate(found.sizes[:SHOWN]):
        table.add_row(str(c), f"{size:,}", found.ids[found.members(c)[0]])
    if found.k > SHOWN:
        table.add_row("…", f"{sum(found.sizes[SHOWN:]):,}", f"in {found.k - SHOWN} more clusters")
    if found.noise:
        table.add_row("noise", f"{found.noise:,}", "no cluster")
    console.out.print(table)
    console.info(found.criterion)
    if found.silhouette is not None:
        console.info(f"silhouette (cosine): {found.silhouette:.3f}")
    if found.nmi is not None:
        over = f" (over the {len(found) - found.noise:,} items with a cluster)" if found.noise else ""
        console.info(
            f"against the {found.classes} class folders: NMI {found.nmi:.3f}, ARI {found.ari:.3f}{over}"
        )
    if "out" in written:
        console.info(
            f"wrote {written['out']['folder']}: assignments.csv, clusters.json, sheets/, summary.png"
        )
    if "links" in written:
        links = written["links"]
        missing = f" ({links['missing']:,} items without an image file)" if links["missing"] else ""
        console.info(f"linked {links['linked']:,} images into {links['folder']}{missing}")
    noise = f", {found.noise:,} noise" if found.noise else ""
    console.success(
        f"{found.k} clusters of {len(found):,} items from {found.source}{noise} in {found.seconds:.1f} s"
    )
