"""What the watch tests share (`invedge watch`, `invedge serve --watch`): a model whose scores tell
images apart, the 40 test images as its gallery (videos of known pictures: video_testing.py).
tests/conftest.py exposes the fixtures.

The untrained network of the other tests embeds any two of these images within 0.002 of each other;
this linear model (a random projection of the pixels, made without torch) scores a gallery image's
own frame at ≥ 0.999 and the best match of an image absent from the gallery at ≤ 0.7, as a trained
model separates them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import invedge

THRESHOLD = 0.9  # between the two (module docstring)


def rgb_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def item_id(path: Path) -> str:
    """A gallery image's id: its path under the embedded folder."""
    return path.relative_to(path.parents[1]).as_posix()


@pytest.fixture(scope="session")
def watch_model(make_tiny_onnx, tmp_path_factory) -> Path:
    return make_tiny_onnx(tmp_path_factory.mktemp("watch_model") / "model.onnx")


@pytest.fixture(scope="session")
def watch_gallery(watch_model, image_folder, tmp_path_factory) -> Path:
    """The 40 test images embedded by `watch_model` and indexed (flat): read only."""
    folder = tmp_path_factory.mktemp("watch_gallery")
    assert invedge("embed", watch_model, image_folder, "--out", folder / "g.emb", "-b", "ort-cpu") == 0
    assert invedge("index", "build", folder / "g.emb", "--out", folder / "g.index") == 0
    return folder / "g.index"


@pytest.fixture(scope="session")
def watch_known(image_folder) -> list[Path]:
    """Gallery images stored losslessly (PNG): a frame made from one is that image exactly."""
    return sorted(image_folder.rglob("*.png"))


@pytest.fixture(scope="session")
def watch_strangers(fmnist_test) -> list[np.ndarray]:
    """Fashion-MNIST images of classes the gallery does not hold (it holds classes 0 to 3), as RGB."""
    rows = np.flatnonzero(fmnist_test.labels >= 6)[:8]
    return [np.ascontiguousarray(np.repeat(fmnist_test.images[i, 0][:, :, None], 3, axis=2)) for i in rows]
