"""The paper's two random views, made batched on tensors (CPU or GPU) from uint8 images.

Per image, as the authors' torchvision pipeline: RandomResizedCrop(scale 0.2–1, ratio 3/4–4/3),
ColorJitter(0.4, 0.4, 0.4, 0.4), RandomGrayscale(0.2), RandomHorizontalFlip, Normalize; then, when
a run asks for them (augment_spec.py: presets and `--aug`), a random rotation, GaussianBlur and
RandomSolarize (BYOL's order). Here the crop, the flip and the rotation are one affine
`grid_sample` per batch, the blur one grouped convolution, and the colour operations tensor
arithmetic over the whole batch, so augmenting 256 views costs a few milliseconds instead of 256
PIL round trips, and runs on the GPU when the model does.

Differences from torchvision, on purpose: crop boxes are continuous (no rounding to whole pixels);
the colour jitter applies brightness, contrast, saturation, hue in that fixed order (torchvision
shuffles the order per image); the crop is resampled bilinearly without antialiasing (training
images are stored at the training size, so crops are enlarged, or shrunk by at most the image
size / `size` ratio when a run asks for smaller views); a rotated crop that
reaches past the image repeats its edge pixels (torchvision fills black corners, which the network
could learn to spot).

Randomness comes only from the `torch.Generator` passed in: the same generator state gives the
same views, which makes `--seed` runs and resumed runs repeat exactly. An operation a run does not
use draws nothing, so the paper's recipe draws the same numbers as before these were added.
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
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in pixels of the training size
    solarize_p: float = 0.0
    rotate: float = 0.0  # degrees: a uniform angle in ±rotate
    view_size: int = 0  # the views' side; 0: image_size (smaller: cheaper steps, evaluated at full size)

    @classmethod
    def from_spec(
        cls, spec: dict, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> AugmentConfig:
        """A resolved augment_spec (its fields) at a run's size and normalisation."""
        return cls(image_size=image_size, mean=tuple(mean), std=tuple(std), **spec)


class TwoViews:
    """uint8 (N, 3, H, W) → two normalised float32 views (N, 3, S, S), independently augmented
    (S: the view size, the image size unless the spec's `size` says otherwise)."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, gray_input = _as_float(images)
        return self.view(x, generator, gray_input), self.view(x, generator, gray_input)

    def views01(self, images: torch.Tensor, generator: torch.Generator, count: int = 2) -> list[torch.Tensor]:
        """`count` views in [0, 1], drawn as training draws them (`augment-preview`'s pictures)."""
        x, gray_input = _as_float(images)
        return [self.view01(x, generator, gray_input) for _ in range(count)]

    def view(self, x: torch.Tensor, generator: torch.Generator, gray_input: bool = False) -> torch.Tensor:
        """One augmented view of float images in [0, 1] (N, 3, H, W), normalised for the model."""
        return normalize01(self.view01(x, generator, gray_input), self.config.mean, self.config.std)

    def view01(self, x: torch.Tensor, generator: torch.Generator, gray_input: bool = False) -> torch.Tensor:
        """One augmented view in [0, 1], before normalisation (what `augment-preview` draws)."""
        c = self.config
        x = random_resized_crop(
            x, c.view_size or c.image_size, c.scale, c.ratio, c.flip_p, generator, c.rotate
        )
        x = color_jitter(x, c.brightness, c.contrast, c.saturation, c.hue, generator, gray_input)
        x = random_grayscale(x, c.grayscale_p, generator)
        if c.blur_p > 0:
            x = random_gaussian_blur(x, c.blur_p, c.blur_sigma, generator)
        if c.solarize_p > 0:
            x = random_solarize(x, c.solarize_p, generator)
        return x


def _as_float(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """uint8 → [0, 1] floats, and whether every image is gray (saturation and hue are then no-ops)."""
    gray_input = bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all())
    return images.float().div_(255.0), gray_input


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
    rotate: float = 0.0,
) -> torch.Tensor:
    """Crop a random box of each image, resize it to size × size, flip it with probability flip_p
    and turn it by a uniform angle in ±rotate degrees."""
    n, _, height, width = x.shape
    boxes = crop_boxes(n, height, width, scale, ratio, generator, x.device)
    flip = torch.rand(n, generator=generator, device=x.device) < flip_p
    angle = _uniform(n, -rotate, rotate, generator, x.device) if rotate > 0 else None
    return crop_resize(x, boxes, flip, size, angle)


def crop_resize(
    x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int, angle: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, 3, H, W), boxes (N, 4) = (x0, y0, w, h) pixels, flip (N,) bool, angle (N,) degrees
    counter-clockwise (torchvision's sense) → (N, 3, size, size), bilinear."""
    n, _, height, width = x.shape
    x0, y0, w, h = boxes.to(x.dtype).unbind(1)
    mirror = torch.where(flip, -1.0, 1.0).to(x.dtype)
    if angle is None:
        cos, sin = torch.ones_like(w), torch.zeros_like(w)
    else:
        rad = torch.deg2rad(angle.to(x.dtype))
        cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid maps output coordinates in [-1, 1] to input coordinates in [-1, 1] (pixel edges).
    # As torchvision's crop, flip, then rotation of the square output: an output point (u, v) is
    # turned back by the angle (y points down: [[cos, −sin], [sin, cos]]), mirrored, then mapped
    # into the box.
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = mirror * cos * w / width
    theta[:, 0, 1] = -mirror * sin * w / width
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 0] = sin * h / height
    theta[:, 1, 1] = cos * h / height
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


def random_gaussian_blur(
    x: torch.Tensor, p: float, sigma: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """torchvision's GaussianBlur(kernel, sigma) with probability p per image: one sigma per image
    drawn from `sigma`, the kernel wide enough for the largest (±3 sigma, within the image)."""
    n = x.shape[0]
    pick = torch.rand(n, generator=generator, device=x.device) < p
    sigmas = _uniform(n, sigma[0], sigma[1], generator, x.device)
    kernel = blur_kernel_size(sigma[1], min(x.shape[-2:]))
    return torch.where(pick.view(-1, 1, 1, 1), gaussian_blur(x, sigmas, kernel), x)


def blur_kernel_size(sigma_max: float, side: int) -> int:
    """Odd, covering ±3 sigma, and no wider than reflect padding allows (pad < side)."""
    wanted = 2 * math.ceil(3 * sigma_max) + 1
    return max(1, min(wanted, 2 * ((side - 1) // 2) + 1))


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor, kernel: int) -> torch.Tensor:
    """Each image (N, C, H, W) blurred with its own sigma (N,): a separable grouped convolution
    with reflect padding, as torchvision.transforms.v2.functional.gaussian_blur."""
    n, c, height, width = x.shape
    half = (kernel - 1) / 2
    offsets = torch.linspace(-half, half, kernel, device=x.device, dtype=x.dtype)
    weights = torch.exp(-0.5 * (offsets.view(1, -1) / sigmas.to(x.dtype).view(-1, 1)) ** 2)
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N·C, K)
    pad = kernel // 2
    flat = F.pad(x.reshape(1, n * c, height, width), (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, weights.view(n * c, 1, 1, kernel), groups=n * c)
    flat = F.conv2d(flat, weights.view(n * c, 1, kernel, 1), groups=n * c)
    return flat.view(n, c, height, width)


def random_solarize(
    x: torch.Tensor, p: float, generator: torch.Generator, threshold: float = 0.5
) -> torch.Tensor:
    """torchvision's RandomSolarize(threshold 0.5) on [0, 1] images: pixels at or above the
    threshold inverted, with probability p per image."""
    pick = (torch.rand(x.shape[0], generator=generator, device=x.device) < p).view(-1, 1, 1, 1)
    return torch.where(pick & (x >= threshold), 1.0 - x, x)


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
