"""Calibration sets: the shipped manifest is reproducible and verified; folders fail clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from invspread_edge_export import calibration_set as cs
from invspread_edge_runtime.errors import DataError, InvedgeError


def test_shipped_manifest_is_what_make_manifest_draws():
    shipped = json.loads(cs.default_manifest_path("fashion-mnist").read_text())
    assert shipped["format"] == cs.MANIFEST_FORMAT and shipped["version"] == 1
    remade = cs.make_manifest(shipped["data"], 100, shipped["split"], shipped["seed"], shipped["name"])
    assert remade == shipped


def test_every_prefix_is_stratified():
    shipped = json.loads(cs.default_manifest_path("fashion-mnist").read_text())
    labels = [e["label"] for e in shipped["images"]]
    assert np.bincount(labels[:50], minlength=10).tolist() == [5] * 10
    assert len({e["index"] for e in shipped["images"]}) == len(labels)  # no duplicates


def test_default_set_loads_verified_prefix():
    calib = cs.default_set("fashion-mnist", 40)
    assert len(calib) == 40 and calib.name == "fashion-mnist-train-v1"
    assert calib.ids[0].startswith("fashion-mnist:train:")
    assert cs.default_set("fashion-mnist", 40).set_id == calib.set_id
    assert cs.default_set("fashion-mnist", 41).set_id != calib.set_id


def test_changed_pixels_are_caught(tmp_path):
    manifest = json.loads(cs.default_manifest_path("fashion-mnist").read_text())
    manifest["images"][3]["sha256"] = "0" * 64
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="does not match the sha256"):
        cs.load_manifest(path, 32)


def test_damaged_or_foreign_manifest(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"format": "something/else"}))
    (tmp_path / "c.json").write_text(json.dumps({"format": cs.MANIFEST_FORMAT, "images": [{"idx": 1}]}))
    for name in ("a.json", "b.json", "c.json"):
        with pytest.raises(InvedgeError):
            cs.load_manifest(tmp_path / name, 32)


def test_folder_set(image_folder):
    calib = cs.from_folder(image_folder, 32)
    assert len(calib) == 32
    assert all(not i.startswith("/") for i in calib.ids)  # relative to the folder
    assert cs.from_folder(image_folder, 32).set_id == calib.set_id
    assert len(cs.from_folder(image_folder, None)) == 40


def test_folder_with_too_few_images(tmp_path, fmnist_test):
    for i in range(5):
        Image.fromarray(fmnist_test.images[i, 0]).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match="at least 32"):
        cs.from_folder(tmp_path)


def test_folder_with_an_unreadable_image(tmp_path, fmnist_test):
    for i in range(40):
        Image.fromarray(fmnist_test.images[i, 0]).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "07.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"unreadable image: 07\.png"):
        cs.from_folder(tmp_path, None)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="calibration folder"):
        cs.from_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no images"):
        cs.from_folder(tmp_path)


def test_count_below_minimum():
    with pytest.raises(InvedgeError, match="--calib-count"):
        cs.default_set("fashion-mnist", 8)
