"""The torch-free readers (Fashion-MNIST IDX, folders of images, CIFAR-10/100 and STL-10 binaries)
and the one rule choosing which of their images a run or an evaluation uses."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from PIL import Image

from invspread_edge_runtime.errors import DataError, InvedgeError
from invspread_edge_runtime.evaluation import datasets
from invspread_edge_runtime.evaluation.datasets import open_dataset, read_idx


def test_fashion_mnist_splits(fmnist_test):
    train = open_dataset("fashion-mnist", "train")
    assert len(train) == 60000 and len(fmnist_test) == 10000
    assert train.images.shape == (60000, 3, 28, 28) and train.images.dtype == np.uint8
    assert (train.images[:, 0] == train.images[:, 2]).all()  # gray replicated to RGB
    assert sorted(np.unique(fmnist_test.labels)) == list(range(10))
    assert np.bincount(fmnist_test.labels).tolist() == [1000] * 10
    assert fmnist_test.native_size == 28 and len(fmnist_test.classes) == 10
    assert fmnist_test.uint8(0, 28).shape == (3, 28, 28)
    assert fmnist_test.uint8(0, 32).shape == (3, 32, 32)  # the evaluation resize
    assert fmnist_test.pil(3).size == (28, 28)


def test_fashion_mnist_is_read_once_and_read_only():
    a = open_dataset("fashion-mnist", "test")
    b = open_dataset("fashion-mnist", "test")
    assert a.images is b.images
    assert not a.images.flags.writeable
    sub = a.subset([5, 1])
    assert sub.images.flags.writeable and (sub.labels == a.labels[[5, 1]]).all()


def test_fashion_mnist_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path)
    monkeypatch.delenv("INVEDGE_FASHION_MNIST", raising=False)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        open_dataset("fashion-mnist")


def test_fashion_mnist_missing_where_the_variable_points_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "nope")
    monkeypatch.setenv("INVEDGE_FASHION_MNIST", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="INVEDGE_FASHION_MNIST"):
        open_dataset("fashion-mnist")


def test_damaged_idx(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="damaged or not an IDX"):
        read_idx(bad)
    with gzip.open(tmp_path / "y.gz", "wb") as fh:
        fh.write(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0]))  # float IDX
    with pytest.raises(DataError, match="IDX"):
        read_idx(tmp_path / "y.gz")


def test_unknown_spec_and_split():
    with pytest.raises(DataError, match="unknown data"):
        open_dataset("no-such-thing")
    with pytest.raises(DataError, match="Invalid split"):
        open_dataset("fashion-mnist", "val")


def test_labelled_folder(image_folder):
    s = open_dataset(str(image_folder))
    assert len(s) == 40 and s.classes == ["class0", "class1", "class2", "class3"]
    assert np.bincount(s.labels).tolist() == [10] * 4
    assert s.uint8(0, 16).shape == (3, 16, 16)


def test_unlabelled_folder_and_image_modes(tmp_path):
    Image.new("L", (10, 20), 128).save(tmp_path / "gray.png")
    Image.new("RGBA", (20, 10), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("P", (8, 8)).save(tmp_path / "palette.bmp")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (9, 9), (1, 2, 3)).save(tmp_path / "sub" / "deep.webp")
    (tmp_path / "notes.txt").write_text("not an image")
    s = open_dataset(str(tmp_path))
    assert len(s) == 4 and s.labels is None  # mixed depths: no class labels
    for i in range(4):
        assert s.uint8(i, 12).shape == (3, 12, 12)
    clear = s.uint8([p.name for p in s.paths].index("clear.png"), 12)
    assert (clear == 255).all()  # transparent pixels composited on white


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no images found"):
        open_dataset(str(tmp_path))


def test_unreadable_file_raises_data_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    s = open_dataset(str(tmp_path))
    with pytest.raises(DataError, match="unreadable image"):
        s.uint8(0, 8)


def _cifar_records(n, label_bytes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=(n, label_bytes), dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return labels, pixels, np.concatenate([labels, pixels], axis=1)


def test_cifar10_binary(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = []
    for i in range(1, 6):
        labels, pixels, rec = _cifar_records(3, 1, i)
        rec.tofile(folder / f"data_batch_{i}.bin")
        expected.append((labels[:, 0], pixels))
    _, test_pixels, rec = _cifar_records(4, 1, 9)
    rec.tofile(folder / "test_batch.bin")
    (folder / "batches.meta.txt").write_text(
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"
    )
    train = open_dataset(f"cifar10:{tmp_path}", "train")
    assert len(train) == 15 and train.native_size == 32 and train.classes[0] == "airplane"
    assert (train.labels[:3] == expected[0][0]).all()
    assert (train.images[0] == expected[0][1][0].reshape(3, 32, 32)).all()  # channel-major R, G, B planes
    test = open_dataset(f"cifar10:{folder}", "test")
    assert len(test) == 4 and (test.images[3].reshape(-1) == test_pixels[3]).all()


def test_cifar100_uses_fine_labels(tmp_path):
    labels, _, rec = _cifar_records(5, 2, 3)
    rec.tofile(tmp_path / "train.bin")
    s = open_dataset(f"cifar100:{tmp_path}", "train")
    assert (s.labels == labels[:, 1]).all() and len(s.classes) == 100


def test_stl10_is_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    img = np.arange(3 * 96 * 96, dtype=np.uint32).reshape(3, 96, 96) % 251
    img = img.astype(np.uint8)
    np.stack([img.transpose(0, 2, 1), img.transpose(0, 2, 1)]).tofile(folder / "test_X.bin")
    np.array([1, 10], dtype=np.uint8).tofile(folder / "test_y.bin")
    s = open_dataset(f"stl10:{tmp_path}", "test")
    assert s.labels.tolist() == [0, 9] and s.native_size == 96
    assert (s.images[0] == img).all()


def test_binary_errors(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 binary version not found"):
        open_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "test.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="damaged"):
        open_dataset(f"cifar100:{tmp_path}", "test")


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("0-4", [0, 1, 2, 3, 4]),
        ("7", [7]),
        ("0,2,5-7", [0, 2, 5, 6, 7]),
        (" 3 - 4 ,1", [1, 3, 4]),
        (None, None),
    ],
)
def test_parse_classes(spec, want):
    assert datasets.parse_classes(spec) == want


@pytest.mark.parametrize("spec", ["a-b", "4-1", "1,,2", "-3"])
def test_parse_classes_rejects(spec):
    with pytest.raises(InvedgeError, match="--classes"):
        datasets.parse_classes(spec)


def test_select_classes_then_fixed_limit(fmnist_test):
    five = datasets.select(fmnist_test, [5, 6, 7, 8, 9])
    assert len(five) == 5000 and set(np.unique(five.labels)) == {5, 6, 7, 8, 9}
    a = datasets.select(fmnist_test, [0, 1], limit=50)
    b = datasets.select(fmnist_test, [0, 1], limit=50)
    assert len(a) == 50 and np.array_equal(a.images, b.images) and set(np.unique(a.labels)) <= {0, 1}
    first = datasets.select(fmnist_test, None, limit=100)
    more = datasets.select(fmnist_test, None, limit=200)
    assert len(np.unique(first.labels)) > 5  # a shuffle, not the first 100 files
    # the first N of one fixed shuffle: a larger limit contains the smaller one
    small = {bytes(x) for x in first.images.reshape(100, -1)}
    big = {bytes(x) for x in more.images.reshape(200, -1)}
    assert small <= big
    assert datasets.select(fmnist_test) is fmnist_test


def test_select_errors(fmnist_test, image_folder, tmp_path):
    with pytest.raises(DataError, match="not in fashion-mnist"):
        datasets.select(fmnist_test, [10])
    with pytest.raises(InvedgeError, match="--limit must be at least 1"):
        datasets.select(fmnist_test, None, 0)
    (tmp_path / "a.png").write_bytes((image_folder / "class0").glob("*.png").__next__().read_bytes())
    with pytest.raises(DataError, match="needs labels"):
        datasets.select(open_dataset(str(tmp_path)), [0])
