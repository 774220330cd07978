"""`invedge augment-preview`: a picture of what training asks the network to ignore.

A few images of the data, each beside views drawn exactly as training draws them (the same
size rule, preset, `--aug` text and batched operations), so a crop that cuts away the defect or a
flip that turns a 2 into a 5 is seen before hours of training rather than after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from invspread_edge_runtime.bounds import check_bounds
from invspread_edge_runtime.evaluation.datasets import select
from invspread_edge_runtime.search.grid import Tile, draw_grid

from . import augment_spec
from .augment import AugmentConfig, TwoViews
from .config import PREVIEW_BOUNDS, absolute_data, check_preview_pixels
from .data import default_image_size, load_split

NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # views01 never normalises; the config needs a pair


@dataclass
class Preview:
    path: Path
    images: int
    views: int
    image_size: int
    size_reason: str
    spec: str  # augment_spec.canonical of what was drawn


def augment_preview(
    data: str,
    out: str | os.PathLike[str],
    preset: str = augment_spec.DEFAULT_PRESET,
    aug: str = "",
    image_size: int | None = None,
    images: int = 8,
    views: int = 2,
    seed: int = 0,
    thumb: int = 96,
) -> Preview:
    """Draw `images` images of `data` (the first of the fixed --limit shuffle), each followed by
    `views` augmented views, as one PNG written atomically to `out`."""
    check_bounds(PREVIEW_BOUNDS, dict(image_size=image_size, images=images, views=views, seed=seed))
    spec = augment_spec.resolve(preset, aug)
    # the default rule's size (image_size None) is at most 96 px: inside the limit at any count
    if side := max(image_size or 0, spec["view_size"]):
        check_preview_pixels(images, views, side)
    picked = select(load_split(absolute_data(data), "train", None, None), None, images)
    size, why = (image_size, "--image-size") if image_size else default_image_size(picked)
    uint8 = torch.from_numpy(np.stack([picked.uint8(i, size) for i in range(len(picked))]))
    two_views = TwoViews(AugmentConfig.from_spec(spec, size, *NO_NORMALISATION))
    drawn = two_views.views01(uint8, torch.Generator().manual_seed(seed), views)
    rows = []
    for i, image_id in enumerate(picked.ids()):
        row = [Tile(_pil(uint8[i].float() / 255), "image", Path(image_id).name)]
        row += [Tile(_pil(view[i]), f"view {v + 1}") for v, view in enumerate(drawn)]
        rows.append(row)
    path = draw_grid(rows, out, thumb)
    return Preview(path, len(picked), views, size, why, augment_spec.canonical(spec))


def preview_run(
    run: str | os.PathLike[str], out: str | os.PathLike[str], images: int = 8, views: int = 2, seed: int = 0
) -> Preview:
    """`augment_preview` of what a run trained with: its data, preset, whole augmentation spec and
    training size, from its checkpoint."""
    from .checkpoint import load_checkpoint

    config = load_checkpoint(run).config
    train = config.get("train", {})
    preset, aug = train.get("preset", augment_spec.DEFAULT_PRESET), train.get("aug", "")
    size = int(config["image_size"])
    return augment_preview(config["data"], out, preset, aug, size, images=images, views=views, seed=seed)


def _pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] → RGB image."""
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr))
