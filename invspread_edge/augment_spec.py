"""The augmentation a run trains with: presets, the `--aug` text syntax, and its checks.

One syntax on the CLI and in Python (`TrainConfig(preset=..., aug=...)`): comma-separated
`key=value` pairs over a preset, e.g. `crop=0.35-1,flip=0,jitter=0.2,gray=0.1,blur=0.5`. A run
stores its whole resolved spec (`canonical`), so a resume, the export report and a reader of
run.json see every value used, whatever the presets become in later versions.

Torch-free at import: `invedge train --help` and the option checks read it without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invspread_edge_runtime.errors import ConfigError

from .sizes import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE

# The paper's CIFAR pipeline (Ye et al. 2019, the authors' torchvision transforms).
NATURAL: dict[str, Any] = {
    "scale": (0.2, 1.0),
    "ratio": (3 / 4, 4 / 3),
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.4,
    "grayscale_p": 0.2,
    "flip_p": 0.5,
    "blur_p": 0.0,
    "blur_sigma": (0.1, 2.0),
    "solarize_p": 0.0,
    "rotate": 0.0,
    "view_size": 0,  # the views' side in pixels; 0: the run's image size
}
# Why each preset (README "Training on your own images" has the same text):
PRESETS: dict[str, dict[str, Any]] = {
    # photos of objects and scenes: the paper's recipe
    "natural": NATURAL,
    # one-channel sensors, X-ray, thermal, industrial parts: saturation, hue and grayscale do
    # nothing on gray pixels; a mirror image of a part is often another part (a left/right
    # bracket); a 0.2 crop can cut away the defect, so crops keep at least 35 % of the image.
    # Brightness and contrast stay: exposure varies on gray sensors too.
    "grayscale": {
        **NATURAL,
        "scale": (0.35, 1.0),
        "saturation": 0.0,
        "hue": 0.0,
        "grayscale_p": 0.0,
        "flip_p": 0.0,
    },
    # the paper's recipe without the flip: for anything whose mirror image means something else
    # (digits, signs, text, handed parts) but whose colours vary as photos do
    "no-flip": {**NATURAL, "flip_p": 0.0},
    # scans and photos of text: no flip, crops that keep half the page, a few degrees of skew and a
    # little blur (focus, resolution), gray ink on paper
    "documents": {
        **NATURAL,
        "scale": (0.5, 1.0),
        "saturation": 0.0,
        "hue": 0.0,
        "grayscale_p": 0.0,
        "flip_p": 0.0,
        "blur_p": 0.2,
        "blur_sigma": (0.1, 1.0),
        "rotate": 5.0,
    },
    # an embedding for `invedge dedup`: invariant only to what a copy goes through (re-encoding, a
    # mild crop, a shift, exposure, a mirror image), so that look-alikes of one kind stay apart. The
    # paper's 0.2 crops and strong colour jitter teach the class, and put two similar shirts as close
    # as a shirt and its JPEG copy (benchmarks/near_duplicates.py measures both)
    "duplicates": {
        **NATURAL,
        "scale": (0.6, 1.0),
        "brightness": 0.25,
        "contrast": 0.25,
        "saturation": 0.1,
        "hue": 0.0,
        "grayscale_p": 0.0,
    },
}
DEFAULT_PRESET = "natural"


def _bounded(low: float, high: float, what: str) -> Callable[[str], float]:
    """A parser of one number in [low, high], whose error says `what` the key takes."""

    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:  # also refuses nan
            raise ValueError(what)
        return value

    return parse


# Every value has a finite range (inf or nan would turn the views, then the loss, into NaN):
_probability = _bounded(0, 1, "a probability in [0, 1]")
# colour jitter strength: torchvision's factor is drawn from [max(0, 1 - x), 1 + x]; past 10 every
# view is black or white
_amount = _bounded(0, 10, "a number in [0, 10]")
_hue = _bounded(0, 0.5, "a number in [0, 0.5] (a hue shift of at most half a turn)")
_degrees = _bounded(0, 180, "degrees in [0, 180]")


MAX_VIEW_SIZE = MAX_IMAGE_SIZE


def _view_size(text: str) -> int:
    """0 (the run's image size) or a side of MIN_IMAGE_SIZE to MAX_VIEW_SIZE pixels."""
    value = int(text) if text.strip().isdigit() else -1
    if value != 0 and not MIN_IMAGE_SIZE <= value <= MAX_VIEW_SIZE:
        raise ValueError(
            f"a whole number of pixels from {MIN_IMAGE_SIZE} to {MAX_VIEW_SIZE} (0: the image size)"
        )
    return value


def _range(low_ok: Callable[[float], bool], what: str) -> Callable[[str], tuple[float, float]]:
    def parse(text: str) -> tuple[float, float]:
        lo_text, sep, hi_text = text.partition("-")
        lo, hi = float(lo_text), float(hi_text if sep else lo_text)
        if not (low_ok(lo) and low_ok(hi) and lo <= hi):
            raise ValueError(f"LO-HI with {what} and LO <= HI")
        return lo, hi

    return parse


# key → (the AugmentConfig fields it sets, the parser of its value)
KEYS: dict[str, tuple[tuple[str, ...], Callable[[str], Any]]] = {
    "crop": (("scale",), _range(lambda v: 0 < v <= 1, "0 < LO, HI <= 1")),
    "ratio": (("ratio",), _range(lambda v: 0.01 <= v <= 100, "0.01 <= LO, HI <= 100")),
    "flip": (("flip_p",), _probability),
    "jitter": (("brightness", "contrast", "saturation"), _amount),  # and hue: see parse_spec
    "brightness": (("brightness",), _amount),
    "contrast": (("contrast",), _amount),
    "saturation": (("saturation",), _amount),
    "hue": (("hue",), _hue),
    "gray": (("grayscale_p",), _probability),
    "blur": (("blur_p",), _probability),
    # in pixels of the training size: 100 blurs even a 1024 px image to a smudge
    "blur-sigma": (("blur_sigma",), _range(lambda v: 0 < v <= 100, "0 < LO, HI <= 100")),
    "solarize": (("solarize_p",), _probability),
    "rotate": (("rotate",), _degrees),
    "size": (("view_size",), _view_size),
}
# the canonical order and spelling of a resolved spec: one key per AugmentConfig field
CANONICAL_KEYS = {
    "scale": "crop",
    "ratio": "ratio",
    "brightness": "brightness",
    "contrast": "contrast",
    "saturation": "saturation",
    "hue": "hue",
    "grayscale_p": "gray",
    "flip_p": "flip",
    "blur_p": "blur",
    "blur_sigma": "blur-sigma",
    "solarize_p": "solarize",
    "rotate": "rotate",
    "view_size": "size",
}


def resolve(preset: str = DEFAULT_PRESET, aug: str = "") -> dict[str, Any]:
    """The AugmentConfig fields (all but size and normalisation) of `preset` with `aug` over it."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}", f"Use one of {', '.join(PRESETS)}")
    return {**PRESETS[preset], **parse_spec(aug)}


def parse_spec(aug: str) -> dict[str, Any]:
    """`key=value,...` → the fields it sets; ConfigError (one line, the allowed keys) if malformed."""
    fields: dict[str, Any] = {}
    for item in (part.strip() for part in aug.split(",")):
        if not item:
            continue
        key, sep, value = (s.strip() for s in item.partition("="))
        if key not in KEYS:
            raise ConfigError(
                f"--aug: unknown key {key!r} in {aug!r}",
                f"Use key=value pairs with keys {', '.join(KEYS)}",
            )
        names, parse = KEYS[key]
        try:
            if not sep:
                raise ValueError("a value")
            parsed = parse(value)
        except ValueError as exc:
            why = str(exc) if "could not convert" not in str(exc) else "a number"
            raise ConfigError(f"--aug: {key}={value!r} is not valid", f"{key} takes {why}") from None
        fields.update(dict.fromkeys(names, parsed))
        if key == "jitter":
            fields["hue"] = min(parsed, 0.5)
    return fields


def with_no_flip(aug: str | None, no_flip: bool) -> str | None:
    """`--aug`'s text with `--no-flip`'s `flip=0` after it (the later key wins); None: neither given."""
    return ",".join(part for part in (aug, "flip=0" if no_flip else None) if part) or None


def canonical(fields: dict[str, Any]) -> str:
    """Every field of a resolved spec, in `--aug` syntax: parse_spec(canonical(f)) == f."""
    return ",".join(f"{key}={_text(fields[name])}" for name, key in CANONICAL_KEYS.items())


def _number(value: float) -> str:
    """Shortest text that reads back as the same float (repr), without a trailing '.0'."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def describe(fields: dict[str, Any]) -> str:
    """One short line for the console: what differs from the paper's recipe."""
    changed = [
        f"{CANONICAL_KEYS[name]}={_text(fields[name])}"
        for name in CANONICAL_KEYS
        if fields[name] != NATURAL[name]
    ]
    return ", ".join(changed) if changed else "the paper's recipe"


def _text(value: float | tuple[float, float]) -> str:
    return "-".join(_number(v) for v in value) if isinstance(value, tuple) else _number(value)
