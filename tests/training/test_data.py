"""Which images a run uses, in which order, and how they are decoded."""

from __future__ import annotations

import os

import numpy as np
import pytest

from invspread_edge import data
from invspread_edge_runtime.errors import DataError
from invspread_edge_runtime.evaluation.datasets import open_dataset


def test_fingerprint_names_the_images(fmnist_test, image_folder):
    a = data.fingerprint(fmnist_test.subset(range(100)))
    assert a == data.fingerprint(fmnist_test.subset(range(100)))
    assert a != data.fingerprint(fmnist_test.subset(range(1, 101)))
    folder = open_dataset(str(image_folder))
    assert data.fingerprint(folder) == data.fingerprint(open_dataset(str(image_folder)))


def test_epoch_batches_split_the_global_order_across_ranks():
    single = data.epoch_batches(100, 8, seed=3, epoch=2, rank=0, world_size=1)
    assert len(single) == 12 and all(len(b) == 8 for b in single)
    assert len(set(np.concatenate(single).tolist())) == 96  # drop_last, no repeats
    ranks = [data.epoch_batches(100, 4, seed=3, epoch=2, rank=r, world_size=2) for r in range(2)]
    for k in range(12):  # step k of 2 ranks × 4 = step k of 1 rank × 8
        assert np.array_equal(np.concatenate([ranks[0][k], ranks[1][k]]), single[k])
    other = data.epoch_batches(100, 8, seed=3, epoch=3)
    assert not np.array_equal(np.concatenate(single), np.concatenate(other))


def test_step_seeds_differ_by_every_coordinate():
    seeds = {data.step_seed(0, e, s, r) for e in range(3) for s in range(3) for r in range(2)}
    assert len(seeds) == 18
    assert data.step_seed(1, 2, 3, 0) == data.step_seed(1, 2, 3, 0)


def test_in_memory_source_and_resize(fmnist_test):
    sub = fmnist_test.subset(range(10))
    native = data.UInt8Source(sub, 28)
    assert native.array is sub.images
    (batch,) = list(native.batches([np.array([3, 1])]))
    assert batch.images.shape == (2, 3, 28, 28) and batch.indices.tolist() == [3, 1]
    assert np.array_equal(batch.images[0].numpy(), sub.images[3])
    resized = data.UInt8Source(sub, 32)
    assert resized.array.shape == (10, 3, 32, 32)
    assert np.array_equal(resized.array[4], sub.uint8(4, 32))  # the runtime's evaluation resize


def test_folder_source_skips_unreadable_files(tmp_path, image_folder):
    for p in sorted((image_folder / "class1").iterdir())[:4]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "zz_broken.jpg").write_bytes(b"garbage")
    images = open_dataset(str(tmp_path))
    source = data.UInt8Source(images, 20, workers=1)
    batches = list(source.batches([np.arange(3), np.arange(3, 5)]))
    assert [len(b.indices) for b in batches] == [3, 1]
    assert batches[1].failed == [4] and batches[0].failed == []
    assert batches[0].images.shape == (3, 3, 20, 20)


def test_mean_std(fmnist_test, image_folder):
    mean, std = data.mean_std(data.UInt8Source(fmnist_test, 28))
    assert mean == pytest.approx((0.286,) * 3, abs=0.002) and std == pytest.approx((0.353,) * 3, abs=0.002)
    fmean, fstd = data.mean_std(data.UInt8Source(open_dataset(str(image_folder)), 28))
    assert 0.1 < fmean[0] < 0.6 and 0.1 < fstd[0] < 0.6


def test_default_image_size(fmnist_test, image_folder, tmp_path):
    from PIL import Image

    assert data.default_image_size(fmnist_test)[0] == 28
    size, why = data.default_image_size(open_dataset(str(image_folder)))  # 28 × 28 PNGs and JPEGs
    assert (size, why) == (28, "the folder's images are all 28×28 px")
    for name, wh in {
        "tiny": [(6, 6)],
        "wide": [(40, 30)],
        "big": [(65, 65)],
        "mixed": [(20, 20), (24, 24)],
    }.items():
        for k, (w, h) in enumerate(wh):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.new("RGB", (w, h)).save(tmp_path / name / f"{k}.png")
    (tmp_path / "mixed" / "broken.png").write_bytes(b"not an image")  # unreadable: not a size
    assert data.default_image_size(open_dataset(str(tmp_path / "tiny")))[0] == 8  # the smallest size
    assert data.default_image_size(open_dataset(str(tmp_path / "wide")))[0] == 30  # the shorter side
    assert data.default_image_size(open_dataset(str(tmp_path / "big")))[0] == 64
    size, why = data.default_image_size(open_dataset(str(tmp_path / "mixed")))
    assert size == 64 and "differ in size" in why


def _copy_images(src, dst, count):
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.rglob("*.png"))[:count]:
        (dst / p.name).write_bytes(p.read_bytes())


def test_fingerprint_of_a_file_name_that_is_not_utf8(tmp_path, image_folder):
    _copy_images(image_folder, tmp_path, 3)
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as fh:
        fh.write(next(image_folder.rglob("*.png")).read_bytes())
    images = open_dataset(str(tmp_path))
    assert len(images) == 4
    fp = data.fingerprint(images)
    assert len(fp) == 64 and fp == data.fingerprint(open_dataset(str(tmp_path)))
    os.rename(raw, os.fsencode(tmp_path) + b"/caf\xe8.png")  # another name: another fingerprint
    assert data.fingerprint(open_dataset(str(tmp_path))) != fp


@pytest.mark.parametrize("workers", [0, 1])
def test_mean_std_of_a_folder_where_nothing_decodes(tmp_path, workers):
    for i in range(3):
        (tmp_path / f"bad{i}.png").write_bytes(b"not an image")
    source = data.UInt8Source(open_dataset(str(tmp_path)), 16, workers=workers)
    with pytest.raises(DataError, match="none of the 3 images") as info:
        data.mean_std(source)
    assert "bad0.png" in str(info.value)  # names the first file and why
    assert "readable images" in str(info.value)


def test_mean_std_skips_chunks_that_are_all_unreadable(tmp_path, image_folder):
    """A whole chunk of 64 unreadable files next to good ones: the statistics of the good ones."""
    for i in range(70):
        (tmp_path / f"a{i:03d}.png").write_bytes(b"broken")
    _copy_images(image_folder, tmp_path / "z", 5)
    source = data.UInt8Source(open_dataset(str(tmp_path)), 16)
    mean, std = data.mean_std(source)
    good_mean, _ = data.mean_std(data.UInt8Source(open_dataset(str(tmp_path / "z")), 16))
    assert mean == pytest.approx(good_mean, abs=1e-6) and all(s > 0 for s in std)
