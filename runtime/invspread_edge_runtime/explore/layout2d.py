"""A 2-D layout of a gallery's embeddings for the map: UMAP, t-SNE or PCA, cached per embeddings checksum.

UMAP (umap-learn) keeps both the neighbourhoods and the coarse arrangement of groups, and is the default
where it is installed; numba compiles it on the first call in a process (about 10 s here), so the
result is cached: a second call on the same embeddings reads a small .npy. scikit-learn's t-SNE
needs no compiler but is slow past a few ten thousand points; PCA (numpy) is instant and always there,
but squeezes every group onto the two widest directions.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, MissingDependency, WriteError
from ..files import atomic_path, user_cache_dir
from ..index.manage import Log, Progress, no_progress
from .items import EXPLORE_EXTRA

if TYPE_CHECKING:
    from .items import ExploreItems

KnnGraph = tuple[np.ndarray, np.ndarray]  # (N, k) neighbour rows and their cosine distances

METHODS = ("auto", "umap", "tsne", "pca")
# auto picks t-SNE (when UMAP is missing) up to this many points, PCA beyond: scikit-learn's t-SNE of
# 5 000 points takes about a minute on 2 cores here, and grows faster than linearly
TSNE_LIMIT = 5_000
MIN_POINTS = 4  # below this a neighbour graph means nothing: every method is PCA
CACHE_ENV = "INVEDGE_CACHE_DIR"
UMAP_NEIGHBOURS = 15  # umap-learn's default neighbourhood, the item itself included
PCA_BLOCK = 65_536  # rows per block of the covariance pass (a memmap is read once, in blocks)


@dataclass
class Layout2D:
    """Where each item sits on the map: `xy` (N, 2) float32 in [0, 1]² (aspect kept, centred)."""

    xy: np.ndarray
    method: str  # the method that made it ("umap", "tsne", "pca"), never "auto"
    seconds: float  # to compute it, or to read it from the cache
    from_cache: bool
    cache_path: Path | None = None  # where it is (or would have been) cached; None with cache=False
    note: str = ""  # why the method differs from the one asked for, or why it was not cached

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seconds": round(self.seconds, 3),
            "from_cache": self.from_cache,
            "cache": str(self.cache_path) if self.cache_path else None,
            "note": self.note,
        }


def layout_2d(
    items: ExploreItems,
    method: str = "auto",
    seed: int = 0,
    progress: Progress = no_progress,
    *,
    cache: bool = True,
    log: Log | None = None,
) -> Layout2D:
    """The items' 2-D layout by `method` (auto: UMAP, else t-SNE up to TSNE_LIMIT points, else PCA;
    t-SNE asked for by name runs at any size: the CLI warns above TSNE_LIMIT, the server refuses).

    Cached under `cache_dir()/<checksum>-<method>-<seed>.npy`; `cache=False` neither reads nor
    writes it. A method asked for by name and not installed is MissingDependency. `log(line)` hears
    that a UMAP or t-SNE layout is about to run (seconds to minutes; its bar shows only on large ones).
    """
    if method not in METHODS:
        raise ConfigError(f"--method {method} is not a layout method", f"Use one of: {', '.join(METHODS)}")
    count = len(items)
    used, note = resolve_method(method, count)
    path = cache_dir() / f"{items.checksum}-{used}-{seed}.npy" if cache else None
    started = time.perf_counter()
    if path is not None and (cached := _read_cached(path, count)) is not None:
        return Layout2D(cached, used, time.perf_counter() - started, True, path, note)
    if log is not None and used != "pca":
        log(f"{used} layout of {count:,} items… (cached for the next map of them)")
    vectors = np.asarray(items.vectors, dtype=np.float32)
    graph = _knn_graph(vectors, progress) if used == "umap" else None  # its own progress, before
    with progress(count, f"map layout ({used})") as on_progress:
        xy = normalise(_compute(vectors, used, seed, graph))
        if on_progress is not None:
            on_progress(count, count)
    seconds = time.perf_counter() - started
    if path is not None and (why := _write_cached(path, xy)):
        note = f"{note}; {why}" if note else why
    return Layout2D(xy, used, seconds, False, path, note)


def resolve_method(method: str, count: int) -> tuple[str, str]:
    """The method that will run for `count` points, and a note when it is not the one asked for.
    Looks the packages up without importing them (umap-learn takes seconds to import), so a cached
    layout is read without them."""
    if count < MIN_POINTS:
        return "pca", f"{count} points: too few for a neighbour graph, PCA used" if method != "pca" else ""
    if method == "umap" and not _installed("umap"):
        raise _missing("umap")
    if method == "tsne" and not _installed("sklearn"):
        raise _missing("tsne")
    if method != "auto":
        return method, ""
    if _installed("umap"):
        return "umap", ""
    if not _installed("sklearn"):
        return "pca", "umap-learn is not installed: PCA used"
    if count <= TSNE_LIMIT:
        return "tsne", "umap-learn is not installed: t-SNE used"
    return "pca", f"umap-learn is not installed: PCA used (auto takes t-SNE up to {TSNE_LIMIT:,} points)"


def cache_dir() -> Path:
    """The layouts' cache: $INVEDGE_CACHE_DIR/maps, else files.user_cache_dir("maps")
    ($XDG_CACHE_HOME or ~/.cache, then invspread-edge/maps)."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser() / "maps"
    return user_cache_dir("maps")


def normalise(xy: np.ndarray) -> np.ndarray:
    """Scale and shift (N, 2) points into [0, 1]², one scale for both axes (the layout's shape kept),
    the narrower axis centred; a single point (or all at one spot) sits at the centre."""
    xy = np.asarray(xy, dtype=np.float64)
    if not len(xy):
        return np.zeros((0, 2), np.float32)
    low, high = xy.min(axis=0), xy.max(axis=0)
    span = float((high - low).max())
    if not np.isfinite(span) or span <= 0:
        return np.full(xy.shape, 0.5, np.float32)
    scaled = (xy - low) / span
    scaled += (1.0 - (high - low) / span) / 2  # centre the narrower axis
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The rows projected on their two leading principal axes: one pass for the d × d covariance
    (in blocks, so a memmap of a million rows is not copied), then its eigenvectors."""
    count, dim = vectors.shape
    if dim < 2:
        return np.concatenate([vectors, np.zeros((count, 1), np.float32)], axis=1)
    mean = np.zeros(dim, np.float64)
    for start in range(0, count, PCA_BLOCK):
        mean += vectors[start : start + PCA_BLOCK].sum(axis=0, dtype=np.float64)
    mean /= count
    cov = np.zeros((dim, dim), np.float64)
    for start in range(0, count, PCA_BLOCK):
        block = vectors[start : start + PCA_BLOCK].astype(np.float64) - mean
        cov += block.T @ block
    _, vecs = np.linalg.eigh(cov)
    axes = vecs[:, ::-1][:, :2]
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)  # a fixed sign per axis
    out = np.empty((count, 2), np.float32)
    for start in range(0, count, PCA_BLOCK):
        out[start : start + PCA_BLOCK] = (vectors[start : start + PCA_BLOCK] - mean) @ axes
    return out


def _compute(vectors: np.ndarray, method: str, seed: int, graph: KnnGraph | None) -> np.ndarray:
    if method == "umap":
        return _umap(vectors, seed, graph)
    if method == "tsne":
        return _tsne(vectors, seed)
    return pca_2d(vectors)


def _knn_graph(vectors: np.ndarray, progress: Progress) -> KnnGraph | None:
    """UMAP's neighbour graph from `nearest` (faiss: exact up to its limit), each item first as its own
    neighbour at distance 0, as umap-learn expects; None where an approximate search left a row short
    (umap then finds them itself). Here, 5 000 items: 8 s instead of 48 s with umap's own search,
    which runs on one thread once seeded."""
    from .neighbours import nearest

    count = len(vectors)
    found = nearest(vectors, min(UMAP_NEIGHBOURS, count) - 1, progress=progress)
    if (found.indices < 0).any():
        return None
    indices = np.concatenate([np.arange(count)[:, None], found.indices], axis=1)
    distances = np.concatenate([np.zeros((count, 1), np.float32), 1.0 - found.scores], axis=1)
    return indices, np.clip(distances, 0.0, 2.0)


def _umap(vectors: np.ndarray, seed: int, graph: KnnGraph | None) -> np.ndarray:
    umap = _umap_module()
    count = len(vectors)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(UMAP_NEIGHBOURS, count),  # the item itself counted, as umap-learn does
        metric="cosine",  # the embedding's own similarity
        random_state=seed,  # reproducible (umap then runs on one thread)
        init="spectral" if count > 16 else "random",  # the spectral start needs a few more points
        precomputed_knn=(*graph, None) if graph is not None else (None, None, None),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state", numba notes
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)


def _tsne(vectors: np.ndarray, seed: int) -> np.ndarray:
    tsne = _tsne_class()
    perplexity = float(min(30.0, max(2.0, (len(vectors) - 1) / 3)))  # must stay below the point count
    reducer = tsne(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)


def _installed(package: str) -> bool:
    """Whether `package` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        return False


def _missing(method: str) -> MissingDependency:
    package = "umap-learn" if method == "umap" else "scikit-learn"
    shown = "UMAP" if method == "umap" else "t-SNE"
    return MissingDependency(package, f"The map's {shown} layout (--method {method})", EXPLORE_EXTRA)


def _umap_module() -> Any:
    try:
        import umap
    except ImportError as exc:
        raise _missing("umap") from exc
    return umap


def _tsne_class() -> Any:
    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:
        raise _missing("tsne") from exc
    return TSNE


def _read_cached(path: Path, count: int) -> np.ndarray | None:
    """The cached layout, or None when absent or unusable (wrong shape, damaged: computed again)."""
    try:
        xy = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if xy.shape != (count, 2) or xy.dtype != np.float32 or not np.isfinite(xy).all():
        return None
    return xy


def _write_cached(path: Path, xy: np.ndarray) -> str:
    """Cache the layout (atomically); a cache that cannot be written costs only the next call's time,
    so it is a note, not an error."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, xy, allow_pickle=False)
    except (OSError, WriteError) as exc:
        return f"not cached ({exc})"
    return ""
