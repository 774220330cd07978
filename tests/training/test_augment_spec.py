"""The `--aug` syntax and the presets: parsing, round trips, one-line errors."""

from __future__ import annotations

import pytest

from invspread_edge import augment_spec
from invspread_edge.augment import AugmentConfig
from invspread_edge_runtime.errors import ConfigError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_natural_is_the_paper_recipe_and_the_old_default():
    spec = augment_spec.resolve("natural")
    assert AugmentConfig.from_spec(spec, 28, MEAN, STD) == AugmentConfig(image_size=28, mean=MEAN, std=STD)


def test_a_full_spec_over_a_preset():
    spec = augment_spec.resolve("natural", "crop=0.35-1,flip=0,jitter=0.2,gray=0.1,blur=0.5")
    assert spec["scale"] == (0.35, 1.0) and spec["flip_p"] == 0.0 and spec["grayscale_p"] == 0.1
    assert spec["brightness"] == spec["contrast"] == spec["saturation"] == spec["hue"] == 0.2
    assert spec["blur_p"] == 0.5 and spec["ratio"] == (3 / 4, 4 / 3)


def test_jitter_caps_hue_and_later_keys_win():
    spec = augment_spec.parse_spec("jitter=0.8,hue=0.1")
    assert spec["brightness"] == 0.8 and spec["hue"] == 0.1
    assert augment_spec.parse_spec("jitter=0.8")["hue"] == 0.5


@pytest.mark.parametrize("preset", list(augment_spec.PRESETS))
def test_canonical_round_trips_every_preset(preset):
    spec = augment_spec.resolve(preset)
    text = augment_spec.canonical(spec)
    assert augment_spec.resolve("natural", text) == spec  # the whole spec: the preset no longer matters
    assert augment_spec.resolve("grayscale", text) == spec


def test_presets_differ_where_they_say():
    gray = augment_spec.resolve("grayscale")
    assert gray["flip_p"] == gray["saturation"] == gray["hue"] == gray["grayscale_p"] == 0
    assert gray["scale"][0] > 0.2 and gray["brightness"] > 0
    assert augment_spec.resolve("no-flip") == {**augment_spec.NATURAL, "flip_p": 0.0}
    docs = augment_spec.resolve("documents")
    assert docs["flip_p"] == 0 and docs["rotate"] > 0
    dup, natural = augment_spec.resolve("duplicates"), augment_spec.NATURAL
    assert dup["scale"][0] > natural["scale"][0] and dup["brightness"] < natural["brightness"]  # milder
    assert dup["hue"] == dup["grayscale_p"] == 0 and dup["flip_p"] == natural["flip_p"]
    assert augment_spec.describe(augment_spec.resolve("natural")) == "the paper's recipe"
    assert augment_spec.describe(augment_spec.resolve("no-flip")) == "flip=0"


@pytest.mark.parametrize(
    ("aug", "needle"),
    [
        ("blurr=0.5", "unknown key 'blurr'"),
        ("flip=2", "flip takes a probability"),
        ("flip", "flip takes a value"),
        ("crop=0.5-0.2", "crop takes LO-HI"),
        ("crop=0-1", "crop takes LO-HI"),
        ("hue=0.7", "hue takes a number in [0, 0.5]"),
        ("rotate=x", "rotate takes a number"),
        ("jitter=-1", "jitter takes a number in [0, 10]"),
        ("jitter=inf", "jitter takes a number in [0, 10]"),  # inf or nan: NaN views, a NaN loss
        ("brightness=nan", "brightness takes a number in [0, 10]"),
        ("contrast=1e9", "contrast takes a number in [0, 10]"),
        ("ratio=0.5-inf", "ratio takes LO-HI with 0.01 <= LO, HI <= 100"),
        ("blur-sigma=0.1-1e308", "blur-sigma takes LO-HI with 0 < LO, HI <= 100"),
        ("crop=nan-1", "crop takes LO-HI"),
    ],
)
def test_bad_specs_are_one_line(aug, needle):
    with pytest.raises(ConfigError) as info:
        augment_spec.resolve("natural", aug)
    text = str(info.value)
    assert needle in text and "\n" not in text


@pytest.mark.parametrize("preset", augment_spec.PRESETS)
def test_every_preset_is_inside_the_bounds_a_user_gets(preset):
    spec = augment_spec.resolve(preset)
    assert augment_spec.parse_spec(augment_spec.canonical(spec)) == spec


def test_unknown_key_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        augment_spec.parse_spec("nope=1")
    assert all(key in info.value.hint for key in augment_spec.KEYS)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown --preset 'photo'"):
        augment_spec.resolve("photo")


def test_view_size_is_a_key_and_zero_means_the_image_size():
    spec = augment_spec.resolve("natural", "size=20")
    assert spec["view_size"] == 20 and augment_spec.describe(spec) == "size=20"
    assert augment_spec.resolve("natural", augment_spec.canonical(spec)) == spec
    assert augment_spec.resolve("natural")["view_size"] == 0
    # a spec stored before `size` existed resolves to full-size views
    old = augment_spec.canonical(augment_spec.resolve("natural")).replace(",size=0", "")
    assert "size" not in old and augment_spec.resolve("natural", old)["view_size"] == 0


@pytest.mark.parametrize("aug", ["size=5", "size=2.5", "size=-8", "size=x", "size=1025"])
def test_bad_view_sizes_are_one_line(aug):
    with pytest.raises(
        ConfigError, match=r"size takes a whole number of pixels from 8 to 1024 \(0: the image size\)"
    ):
        augment_spec.resolve("natural", aug)
