"""The paper's two random views, made batched on tensors (CPU or GPU) from uint8 images.

Per image, as the authors' torchvision pipeline: RandomResizedCrop(scale 0.2–1, ratio 3/4–4/3),
ColorJitter(0.4, 0.4, 0.4, 0.4), RandomGrayscale(0.2), RandomHorizontalFlip, Normalize. Here the
crop and the flip are one affine `grid_sample` per batch and the colour operations are tensor
arithmetic over the whole batch, so augmenting 256 views costs a few milliseconds instead of 256
PIL round trips, and runs on the GPU when the model does.

Differences from torchvision, on purpose: crop boxes are continuous (no rounding to whole pixels);
the colour jitter applies brightness, contrast, saturation, hue in that fixed order (torchvision
shuffles the order per image); the crop is resampled bilinearly without antialiasing (training
images are stored at the training size, so crops are only ever enlarged).

Randomness comes only from the `torch.Generator` passed in: the same generator state gives the
same views, which makes `--seed` runs and resumed runs repeat exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class AugmentConfig:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.4
    grayscale_p: float = 0.2
    flip_p: float = 0.5


class TwoViews:
    """uint8 (N, 3, H, W) → two normalised float32 views (N, 3, S, S), independently augmented."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().div_(255.0)
        gray_input = bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all())
        return self.view(x, generator, gray_input), self.view(x, generator, gray_input)

    def view(self, x: torch.Tensor, generator: torch.Generator, gray_input: bool = False) -> torch.Tensor:
        """One augmented view of float images in [0, 1] (N, 3, H, W)."""
        c = self.config
        x = random_resized_crop(x, c.image_size, c.scale, c.ratio, c.flip_p, generator)
        x = color_jitter(x, c.brightness, c.contrast, c.saturation, c.hue, generator, gray_input)
        x = random_grayscale(x, c.grayscale_p, generator)
        return normalize01(x, c.mean, c.std)


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device,
    tries: int = 10,
) -> torch.Tensor:
    """(n, 4) boxes (x0, y0, w, h) in pixels, drawn as torchvision's RandomResizedCrop.get_params.

    Ten tries per image for a box that fits; images whose tries all fail get the centre crop of
    the whole image clamped to the allowed aspect ratios (torchvision's fallback).
    """
    area = height * width
    target = area * (
        torch.rand(n, tries, generator=generator, device=device) * (scale[1] - scale[0]) + scale[0]
    )
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(torch.rand(n, tries, generator=generator, device=device) * (log_hi - log_lo) + log_lo)
    w = torch.sqrt(target * aspect)
    h = torch.sqrt(target / aspect)
    fits = (w <= width) & (h <= height)
    first = fits.int().argmax(dim=1)  # first try that fits (0 when none does)
    rows = torch.arange(n, device=device)
    w, h, any_fit = w[rows, first], h[rows, first], fits.any(dim=1)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = height * ratio[1], float(height)
    else:
        fw, fh = float(width), float(height)
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    h = torch.where(any_fit, h, torch.full_like(h, fh))
    u = torch.rand(n, 2, generator=generator, device=device)
    x0 = torch.where(any_fit, u[:, 0] * (width - w), (width - w) / 2)
    y0 = torch.where(any_fit, u[:, 1] * (height - h), (height - h) / 2)
    return torch.stack([x0, y0, w, h], dim=1)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_p: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Crop a random box of each image, resize it to size × size and flip it with probability flip_p."""
    n, _, height, width = x.shape
    boxes = crop_boxes(n, height, width, scale, ratio, generator, x.device)
    flip = torch.rand(n, generator=generator, device=x.device) < flip_p
    return crop_resize(x, boxes, flip, size)


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W), boxes (N, 4) = (x0, y0, w, h) pixels, flip (N,) bool → (N, 3, size, size), bilinear."""
    n, _, height, width = x.shape
    x0, y0, w, h = boxes.to(x.dtype).unbind(1)
    # affine_grid maps output coordinates in [-1, 1] to input coordinates in [-1, 1] (pixel edges)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = torch.where(flip, -w / width, w / width)
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * y0 + h) / height - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) → (N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _factors(n: int, amount: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return _uniform(n, max(0.0, 1 - amount), 1 + amount, generator, device).view(n, 1, 1, 1)


def color_jitter(
    x: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: torch.Generator,
    gray_input: bool = False,
) -> torch.Tensor:
    """torchvision's ColorJitter per image, in a fixed order. Saturation and hue leave gray pixels
    unchanged, so for all-gray batches (`gray_input`) they are skipped; their random draws are not,
    so the random stream stays the same either way."""
    n, device = x.shape[0], x.device
    b = _factors(n, brightness, generator, device)
    c = _factors(n, contrast, generator, device)
    s = _factors(n, saturation, generator, device)
    h = _uniform(n, -hue, hue, generator, device).view(n, 1, 1)
    x = (x * b).clamp_(0, 1)
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (x * c + mean * (1 - c)).clamp_(0, 1)
    if gray_input:
        return x
    x = (x * s + grayscale(x) * (1 - s)).clamp_(0, 1)
    return adjust_hue(x, h)


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    pick = (torch.rand(x.shape[0], generator=generator, device=x.device) < p).view(-1, 1, 1, 1)
    return torch.where(pick, grayscale(x).expand_as(x), x)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `shift` (N, 1, 1) turns, through HSV, as torchvision's adjust_hue."""
    h, s, v = rgb_to_hsv(x)
    return hsv_to_rgb(torch.remainder(h + shift, 1.0), s, v)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    chroma = maxc - minc
    flat = chroma == 0
    safe_max = torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    sat = torch.where(flat, torch.zeros_like(chroma), chroma / safe_max)
    div = torch.where(flat, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(flat, torch.zeros_like(hue), torch.remainder(hue / 6.0, 1.0))
    return hue, sat, maxc


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = torch.remainder(sector, 6.0)
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    # sector 0..5 → (r, g, b) = (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    table = {
        0: (v, t, p),
        1: (q, v, p),
        2: (p, v, t),
        3: (p, q, v),
        4: (t, p, v),
        5: (v, p, q),
    }
    out = torch.zeros((*h.shape[:1], 3, *h.shape[1:]), dtype=v.dtype, device=v.device)
    for k, rgb in table.items():
        mask = (sector == k).unsqueeze(1)
        out = torch.where(mask, torch.stack(rgb, dim=1), out)
    return out


def normalize01(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Images in [0, 1] → model input; the arithmetic of runtime.preprocess.normalize on x · 255."""
    return normalize_uint8(x * 255.0, mean, std)


def normalize_uint8(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (or 0–255 float) (N, 3, H, W) → float32 (x − 255·mean) / (255·std).

    Bit for bit the formula of `invspread_edge_runtime.preprocess.normalize`, so evaluation here and
    the exported model in the runtime see identical inputs.
    """
    scale = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1) * 255.0
    shift = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1) * 255.0
    return (images.float() - shift) / scale
