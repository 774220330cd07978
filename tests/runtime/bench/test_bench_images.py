"""The bench's image set: the same images, drawn reproducibly, labels where the data has them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from invspread_edge_runtime.bench.images import _bounded, load_bench_images
from invspread_edge_runtime.errors import ConfigError


def test_fashion_mnist_draw_is_reproducible():
    a, b = load_bench_images("fashion-mnist", 50), load_bench_images("fashion-mnist", 50)
    assert len(a) == 50 and a.labels is not None and len(a.labels) == 50
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images, strict=True))
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, load_bench_images("fashion-mnist", 50, seed=1).labels)


def test_folder_with_class_folders_and_a_broken_file(image_folder, tmp_path):
    pics = load_bench_images(str(image_folder), 1000)
    assert len(pics) == 40 and pics.skipped == 0 and set(pics.labels) == {0, 1, 2, 3}
    broken = tmp_path / "set"
    broken.mkdir()
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))[:5]):
        (broken / f"{i}.png").write_bytes(path.read_bytes())
    (broken / "bad.png").write_bytes(b"not a png")
    pics = load_bench_images(str(broken), 10)
    assert (len(pics), pics.skipped, pics.labels) == (5, 1, None)


def test_batches_wrap_around_the_set():
    pics = load_bench_images("fashion-mnist", 10)
    batches = pics.batches(4)
    assert [len(b) for b in batches] == [4, 4, 4]
    assert batches[2][2] is pics.images[0]  # image 10 wraps to image 0
    assert len(pics.batches(1, limit=3)) == 3


@pytest.mark.parametrize("count", [1, 1_000_000])  # accuracy needs neighbours; all are kept in memory
def test_an_image_count_out_of_range(count):
    with pytest.raises(ConfigError, match=f"--images {count} is out of range. Use 2 to 10000"):
        load_bench_images("fashion-mnist", count)


def test_large_photos_reduced_once():
    big = Image.new("RGB", (4000, 3000))
    reduced = _bounded(big, 1024)
    assert reduced.size == (2000, 1500)
    assert _bounded(Image.new("RGB", (64, 48)), 1024).size == (64, 48)
