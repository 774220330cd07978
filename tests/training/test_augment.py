"""Batched augmentations against torchvision's per-image functions, and their random draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from invspread_edge import augment
from invspread_edge.augment import AugmentConfig, TwoViews
from invspread_edge_runtime.preprocess import normalize

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def color_images(n=6, size=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_crop_resize_matches_torchvision_resized_crop():
    x = color_images(3, 24).float() / 255
    boxes = torch.tensor([[2.0, 3.0, 10.0, 12.0], [0.0, 0.0, 24.0, 24.0], [5.0, 1.0, 16.0, 8.0]])
    flip = torch.tensor([False, True, False])
    got = augment.crop_resize(x, boxes, flip, 32)
    for i, (x0, y0, w, h) in enumerate(boxes.int().tolist()):
        want = TF.resized_crop(x[i], y0, x0, h, w, [32, 32], antialias=False)
        if flip[i]:
            want = TF.hflip(want)
        # the border pixels differ on purpose: we sample the image just outside the box where
        # torchvision repeats the box's edge pixels
        assert torch.allclose(got[i, :, 2:-2, 2:-2], want[:, 2:-2, 2:-2], atol=1e-5)


@pytest.mark.parametrize("factor", [0.6, 1.3])
def test_color_ops_match_torchvision(factor):
    x = color_images(4, 8).float() / 255
    f = torch.full((4, 1, 1, 1), factor)
    assert torch.allclose((x * f).clamp(0, 1), TF.adjust_brightness(x, factor), atol=1e-6)
    mean = augment.grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose((x * f + mean * (1 - f)).clamp(0, 1), TF.adjust_contrast(x, factor), atol=1e-5)
    gray = augment.grayscale(x)
    assert torch.allclose((x * f + gray * (1 - f)).clamp(0, 1), TF.adjust_saturation(x, factor), atol=1e-5)
    assert torch.allclose(gray.expand_as(x), TF.rgb_to_grayscale(x, 3), atol=1e-6)


@pytest.mark.parametrize("shift", [-0.4, -0.1, 0.0, 0.25, 0.4])
def test_hue_matches_torchvision(shift):
    x = color_images(4, 8, seed=1).float() / 255
    x[0, :, :2] = 0.5  # some gray pixels
    x[1] = 0  # black
    got = augment.adjust_hue(x, torch.full((4, 1, 1), shift))
    assert torch.allclose(got, TF.adjust_hue(x, shift), atol=1e-5)


def test_hsv_round_trip():
    x = color_images(5, 8, seed=2).float() / 255
    # divisions and a floor in float32: a few ulps of [0, 1] (1e-7 each), whatever the CPU's kernels
    assert torch.allclose(augment.hsv_to_rgb(*augment.rgb_to_hsv(x)), x, atol=1e-5)


def test_crop_boxes_follow_the_recipe():
    g = torch.Generator().manual_seed(0)
    boxes = augment.crop_boxes(4000, 28, 28, (0.2, 1.0), (3 / 4, 4 / 3), g, torch.device("cpu"))
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 28 + 1e-4).all() and (y0 + h <= 28 + 1e-4).all()
    area = w * h / 28**2
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 1 + 1e-5
    assert (w / h).min() >= 3 / 4 - 1e-5 and (w / h).max() <= 4 / 3 + 1e-5
    assert 0.45 < area.mean() < 0.65  # areas spread over the range, not all small or all whole


def test_crop_boxes_fall_back_to_the_centre_for_extreme_shapes():
    g = torch.Generator().manual_seed(0)
    # a 4:1 strip: no box of scale ≥ 0.9 with ratio ≤ 4/3 fits, so the fallback is taken
    boxes = augment.crop_boxes(50, 10, 40, (0.9, 1.0), (3 / 4, 4 / 3), g, torch.device("cpu"))
    x0, _, w, h = boxes.unbind(1)
    assert torch.allclose(h, torch.full_like(h, 10.0)) and torch.allclose(w, torch.full_like(w, 40 / 3))
    assert torch.allclose(x0, (40 - w) / 2)


def test_two_views_shapes_determinism_and_independence():
    cfg = AugmentConfig(image_size=16, mean=MEAN, std=STD)
    aug = TwoViews(cfg)
    images = color_images(8, 20)
    v1, v2 = aug(images, torch.Generator().manual_seed(1))
    assert v1.shape == v2.shape == (8, 3, 16, 16) and v1.dtype == torch.float32
    w1, w2 = aug(images, torch.Generator().manual_seed(1))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    u1, _ = aug(images, torch.Generator().manual_seed(2))
    assert not torch.allclose(v1, u1)
    assert not torch.allclose(v1, v2)
    lo = (0 - np.array(MEAN)) / np.array(STD)
    hi = (1 - np.array(MEAN)) / np.array(STD)
    for c in range(3):  # values stay inside the normalised image range
        assert v1[:, c].min() >= lo[c] - 1e-4 and v1[:, c].max() <= hi[c] + 1e-4


def test_grayscale_and_flip_rates():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2000, 3, 2, 2)
    x[:, 0] = 1.0
    x[:, 1:] = 0.0  # pure red: gray only after RandomGrayscale
    out = augment.random_grayscale(x, 0.2, g)
    gray = (out[:, 0] == out[:, 1]).all(dim=(1, 2))
    assert 0.17 < gray.float().mean() < 0.23


def test_gray_input_shortcut_changes_nothing_but_time():
    """Saturation and hue are no-ops on gray images; skipping them must give the same pixels."""
    gray = color_images(6, 12)[:, :1].expand(6, 3, 12, 12).float() / 255
    full = augment.color_jitter(gray, 0.4, 0.4, 0.4, 0.4, torch.Generator().manual_seed(5), gray_input=False)
    fast = augment.color_jitter(gray, 0.4, 0.4, 0.4, 0.4, torch.Generator().manual_seed(5), gray_input=True)
    assert torch.allclose(full, fast, atol=1e-3)  # luma weights sum to 0.9999, not 1


def test_normalize_is_the_runtime_formula_bit_for_bit():
    images = color_images(3, 10)
    got = augment.normalize_uint8(images, MEAN, STD).numpy()
    want = normalize(images.numpy(), MEAN, STD)
    assert np.array_equal(got, want)
    from_float = augment.normalize01(images.float() / 255, MEAN, STD)
    assert torch.allclose(from_float, augment.normalize_uint8(images, MEAN, STD), atol=1e-5)


def smooth_images(n=2, size=32, seed=0):
    """Images without pixel-level noise: bilinear resampling differences stay small."""
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect"), 5, 1)


@pytest.mark.parametrize("angle", [-25.0, 10.0, 90.0])
def test_rotation_matches_torchvision_rotate(angle):
    x = smooth_images()
    whole = torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 2)
    got = augment.crop_resize(x, whole, torch.tensor([False, False]), 32, torch.full((2,), angle))
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    inside = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 12**2  # torchvision fills the corners black
    for i in range(2):
        want = TF.rotate(x[i], angle, interpolation=TF.InterpolationMode.BILINEAR)
        assert torch.allclose(got[i][:, inside], want[:, inside], atol=1e-5)


def test_rotation_of_a_flipped_crop_is_the_flip_then_the_turn():
    x = smooth_images(1)
    box = torch.tensor([[4.0, 2.0, 20.0, 24.0]])
    flipped = augment.crop_resize(x, box, torch.tensor([True]), 32)
    got = augment.crop_resize(x, box, torch.tensor([True]), 32, torch.tensor([15.0]))
    # rotating the flipped crop's output: compare on the inner disc, away from the border fill
    want = TF.rotate(flipped[0], 15.0, interpolation=TF.InterpolationMode.BILINEAR)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    inside = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 10**2
    # two resamplings against one: within 0.05 (the other turn, or the flip after it, is off by 0.15)
    assert torch.allclose(got[0][:, inside], want[:, inside], atol=5e-2)


@pytest.mark.parametrize("sigma", [0.3, 0.9, 2.0])
def test_gaussian_blur_matches_torchvision(sigma):
    x = color_images(3, 16).float() / 255
    kernel = augment.blur_kernel_size(2.0, 16)
    got = augment.gaussian_blur(x, torch.full((3,), sigma), kernel)
    for i in range(3):
        want = TF.gaussian_blur(x[i], [kernel, kernel], [sigma, sigma])
        assert torch.allclose(got[i], want, atol=1e-5)


def test_blur_kernel_fits_small_images():
    assert augment.blur_kernel_size(2.0, 64) == 13
    assert augment.blur_kernel_size(2.0, 8) == 7  # reflect padding needs pad < side
    assert augment.blur_kernel_size(0.1, 8) == 3


def test_blur_and_solarize_rates_and_pixels():
    x = color_images(2000, 4, seed=4).float() / 255
    g = torch.Generator().manual_seed(6)
    blurred = augment.random_gaussian_blur(x, 0.3, (1.0, 2.0), g)
    changed = (blurred != x).flatten(1).any(dim=1).float().mean()
    assert 0.26 < changed < 0.34
    solar = augment.random_solarize(x, 0.5, g)
    picked = (solar != x).flatten(1).any(dim=1)
    assert 0.45 < picked.float().mean() < 0.55
    assert torch.equal(solar[picked], TF.solarize(x[picked], 0.5))
    assert torch.equal(solar[~picked], x[~picked])


def test_unused_ops_draw_nothing():
    """The paper's recipe draws the same numbers with or without the new operations in the code."""
    images = color_images(8, 20)
    plain = TwoViews(AugmentConfig(image_size=16, mean=MEAN, std=STD))
    explicit = TwoViews(
        AugmentConfig(image_size=16, mean=MEAN, std=STD, blur_p=0.0, solarize_p=0.0, rotate=0.0)
    )
    a = plain(images, torch.Generator().manual_seed(9))
    b = explicit(images, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    g = torch.Generator().manual_seed(9)
    plain(images, g)
    after = torch.rand(1, generator=g)
    g2 = torch.Generator().manual_seed(9)
    full = TwoViews(AugmentConfig(image_size=16, mean=MEAN, std=STD, blur_p=0.5, solarize_p=0.2, rotate=10))
    full(images, g2)
    assert not torch.equal(after, torch.rand(1, generator=g2))  # the new ops do draw when used


def test_every_op_seeded():
    cfg = AugmentConfig(image_size=16, mean=MEAN, std=STD, blur_p=0.5, solarize_p=0.3, rotate=20)
    images = color_images(8, 20)
    one = TwoViews(cfg)(images, torch.Generator().manual_seed(3))
    two = TwoViews(cfg)(images, torch.Generator().manual_seed(3))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_view_size_makes_smaller_views_of_the_same_draws():
    """`size=S` views are the image-size views' crops resampled to S: the same random numbers."""
    images = color_images(8, 20)
    small = TwoViews(AugmentConfig(image_size=16, mean=MEAN, std=STD, view_size=12))
    direct = TwoViews(AugmentConfig(image_size=12, mean=MEAN, std=STD))
    a = small(images, torch.Generator().manual_seed(4))
    b = direct(images, torch.Generator().manual_seed(4))
    assert a[0].shape == (8, 3, 12, 12) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    full = TwoViews(AugmentConfig(image_size=16, mean=MEAN, std=STD, view_size=0))
    assert full(images, torch.Generator().manual_seed(4))[0].shape == (8, 3, 16, 16)
