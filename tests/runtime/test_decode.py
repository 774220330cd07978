"""Image decoding: one function (preprocess.load_image / to_rgb) for training, export and runtime.

Each kind of file that decoded silently wrong before (a 16-bit PNG clipped to white, EXIF
orientation ignored) or needs a rule (float pixels, transparency, CMYK, several frames) is built
here, decoded, and compared with the array it must give; then the runtime's Embedder, training's
ImageSet and the export's calibration reader are shown to produce the same pixels for every file.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import FMNIST_MEAN, FMNIST_STD

from invspread_edge_runtime.backends.base import Backend, BackendInfo
from invspread_edge_runtime.errors import DataError
from invspread_edge_runtime.evaluation.datasets import image_folder
from invspread_edge_runtime.metadata import ModelMeta
from invspread_edge_runtime.preprocess import load_image, normalize, to_rgb, to_uint8_chw

H, W = 12, 20  # not square, so a rotation changes the shape too
ORIENTATION = 0x0112


def gray3(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(a, np.uint8)[..., None], 3, axis=2)


def upright_rgb() -> np.ndarray:
    """An asymmetric (H, W, 3) picture: every rotation and flip of it is a different array."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 12, y * 20, (x * 7 + y * 3) % 256], axis=2).astype(np.uint8)


def exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = value
    return exif


# stored pixels for each orientation: what a camera writes, so that the viewer's transpose gives upright
STORED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # the viewer rotates 270° (90° clockwise) back
    8: Image.Transpose.ROTATE_270,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
}


# --- 16-bit, 32-bit and float pixels ----------------------------------------------------------------


def gradient16() -> np.ndarray:
    return np.linspace(0, 65535, H * W).round().astype(np.uint16).reshape(H, W)


def test_16_bit_png_keeps_its_gradient(tmp_path):
    a = gradient16()
    Image.fromarray(a).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as raw:
        assert raw.mode == "I;16"  # the case a plain 8-bit conversion clips to white
    got = np.asarray(load_image(tmp_path / "g16.png"))
    np.testing.assert_array_equal(got, gray3(a >> 8))
    assert (got == 255).mean() < 0.01 and got.min() == 0 and got.max() == 255


def png16_rgb(values: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (gray values in all three), written by hand: Pillow cannot."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rgb = np.repeat(values.astype(">u2")[..., None], 3, axis=2)
    rows = b"".join(b"\0" + row.tobytes() for row in rgb)
    header = struct.pack(">IIBBBBB", values.shape[1], values.shape[0], 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_16_bit_gray_scales_like_pillows_16_bit_colour(tmp_path):
    """High byte, as Pillow decodes 16-bit RGB PNGs: a gray and a colour file of one picture agree."""
    a = np.array([[0, 255, 256, 257 * 100, 32768, 65280, 65535]], np.uint16)
    got = np.asarray(to_rgb(Image.fromarray(a)))[..., 0]
    np.testing.assert_array_equal(got, [[0, 0, 1, 100, 128, 255, 255]])
    (tmp_path / "rgb16.png").write_bytes(png16_rgb(a))
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgb16.png")), gray3(got))


def test_mode_i_is_read_as_16_bit_unless_its_values_need_32(tmp_path):
    a = gradient16().astype(np.int32)
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(a))), gray3(a >> 8))
    wide = np.array([[-5, 0, 1 << 24, (1 << 31) - 1]], np.int32)  # beyond 16 bits: 32-bit scale
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(wide)))[..., 0], [[0, 0, 1, 127]])
    Image.fromarray(a).save(tmp_path / "i.tif")  # a 32-bit integer TIFF holding 16-bit values
    with Image.open(tmp_path / "i.tif") as raw:
        assert raw.mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "i.tif")), gray3(a >> 8))


def test_float_pixels_are_taken_as_0_to_1(tmp_path):
    f = np.array([[0.0, 0.5, 1.0, 1.7, -0.2, np.nan, 0.25]], np.float32)
    expected = [[0, 128, 255, 255, 0, 0, 64]]
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(f)))[..., 0], expected)
    Image.fromarray(f).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "f.tif"))[..., 2], expected)


# --- orientation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    up = upright_rgb()
    stored = Image.fromarray(up).transpose(STORED[orientation])
    path = tmp_path / f"o{orientation}.png"  # PNG: lossless, so the upright picture comes back exactly
    stored.save(path, exif=exif_orientation(orientation))
    np.testing.assert_array_equal(np.asarray(load_image(path)), up)


def test_exif_rotated_jpeg_is_upright(tmp_path):
    up = upright_rgb()
    path = tmp_path / "camera.jpg"
    Image.fromarray(up).transpose(STORED[6]).save(path, quality=95, exif=exif_orientation(6))
    with Image.open(path) as raw:
        as_stored = np.asarray(raw.convert("RGB"))  # the pixels as written, before orientation
    got = np.asarray(load_image(path))
    np.testing.assert_array_equal(got, np.rot90(as_stored, k=-1))  # exactly the stored pixels, rotated
    assert got.shape == up.shape
    err = np.abs(got.astype(int) - up).mean()
    assert err < 6, err  # and close to the upright original (JPEG is lossy)


def test_in_memory_images_follow_the_same_rules():
    up = upright_rgb()
    img = Image.fromarray(up).transpose(STORED[8])
    img.getexif()[ORIENTATION] = 8
    np.testing.assert_array_equal(np.asarray(to_rgb(img)), up)
    assert img.size == (H, W)  # the caller's image is left as it was


# --- transparency, CMYK, palette, frames ------------------------------------------------------------


def test_la_is_composited_on_white(tmp_path):
    luma = np.array([[0, 100, 200, 50]], np.uint8)
    alpha = np.array([[255, 0, 128, 255]], np.uint8)
    Image.fromarray(np.stack([luma, alpha], axis=2), "LA").save(tmp_path / "la.png")
    got = np.asarray(load_image(tmp_path / "la.png")).astype(int)
    expected = np.rint(luma * (alpha / 255) + 255 * (1 - alpha / 255))
    assert np.abs(got - gray3(expected)).max() <= 1
    np.testing.assert_array_equal(got[0, [0, 1, 3]], gray3([[0, 255, 50]])[0])  # opaque exact, clear white


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [0, 255, 0, 0], [0, 0, 255, 255]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(
        np.asarray(load_image(tmp_path / "rgba.png")), [[[255, 0, 0], [255, 255, 255], [0, 0, 255]]]
    )


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 1))
    img.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 0] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1])
    img.info["transparency"] = 2
    img.save(tmp_path / "p.png", transparency=2)
    np.testing.assert_array_equal(
        np.asarray(load_image(tmp_path / "p.png")),
        [[[10, 20, 30], [200, 100, 50], [255, 255, 255], [200, 100, 50]]],
    )


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :8] = (255, 0, 0, 0)  # cyan
    cmyk[:, 8:16] = (0, 255, 0, 0)  # magenta
    cmyk[:, 16:24] = (0, 0, 0, 255)  # black
    # white: no ink at all in the last quarter
    expected = np.zeros((16, 32, 3), np.uint8)
    expected[:, :8], expected[:, 8:16], expected[:, 24:] = (0, 255, 255), (255, 0, 255), (255, 255, 255)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "cmyk.tif")), expected)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as raw:
        assert raw.mode == "CMYK"
    got = np.asarray(load_image(tmp_path / "cmyk.jpg")).astype(int)
    inner = (slice(2, 14), np.r_[2:6, 10:14, 18:22, 26:30])  # away from JPEG's ringing at the edges
    assert np.abs(got[inner] - expected[inner]).max() <= 12


@pytest.mark.parametrize("fmt", ["gif", "tif"])
def test_multi_frame_files_give_their_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (W, H), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / f"frames.{fmt}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as raw:
        assert raw.n_frames == 3
    got = np.asarray(load_image(path))
    np.testing.assert_array_equal(got, np.broadcast_to(np.uint8([255, 0, 0]), (H, W, 3)))


def test_grayscale_and_bilevel(tmp_path):
    luma = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    Image.fromarray(luma).save(tmp_path / "l.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "l.png")), gray3(luma))
    Image.fromarray(luma > 100).save(tmp_path / "b.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "b.png")), gray3((luma > 100) * 255))


def test_undecodable_files_name_the_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(upright_rgb()).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("trunc.png", "text.jpg"):
        with pytest.raises(DataError, match=rf"unreadable image .*{name}"):
            load_image(tmp_path / name)


def test_a_long_thin_image_is_cropped_before_it_is_resized():
    """A 1 × 200 000 image (a few hundred bytes as PNG) resized first would be 224 × 44.8 M pixels
    (30 GB); cropped first it costs nothing, and gives the same picture as resize-then-crop."""
    thin = Image.new("RGB", (1, 200_000), (40, 80, 120))
    out = to_uint8_chw(thin, 224)
    assert out.shape == (3, 224, 224)
    assert (out == np.array([40, 80, 120], np.uint8)[:, None, None]).all()
    # past 16:1 the crop comes first: pixels match the resize-then-crop arithmetic to rounding
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (340, 20, 3), dtype=np.uint8))
    full = img.resize((28, 476), Image.BILINEAR).crop((0, 224, 28, 252))
    diff = np.abs(to_uint8_chw(img, 28).transpose(1, 2, 0).astype(int) - np.asarray(full, dtype=int))
    assert diff.max() <= 2


def test_a_large_image_below_pillows_bomb_limit_decodes_without_a_python_warning(tmp_path):
    """Between Pillow's MAX_IMAGE_PIXELS and twice that, Pillow warns (two foreign lines on stderr);
    such images (a 108 MP photo) decode without a word, in a fresh process as the CLI runs."""
    path = tmp_path / "big.png"
    side = int((Image.MAX_IMAGE_PIXELS * 1.2) ** 0.5) + 1
    Image.new("L", (side, side), 7).save(path)
    code = "import sys; from invspread_edge_runtime.preprocess import load_image; print(load_image(sys.argv[1]).size)"
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == f"({side}, {side})", done.stderr
    assert done.stderr == ""


# --- one decoder for all: runtime, training, export calibration -------------------------------------

SIZE = 10  # every image is resized and centre-cropped as a model of image size 10 would see it


def write_cases(folder: Path) -> dict[str, np.ndarray]:
    """One file of every kind above → the (H, W, 3) array it must decode to (lossless files only)."""
    folder.mkdir()
    up = upright_rgb()
    a16 = gradient16()
    Image.fromarray(a16).save(folder / "g16.png")
    Image.fromarray(up).transpose(STORED[6]).save(folder / "rot6.png", exif=exif_orientation(6))
    la = np.stack(
        [np.full((H, W), 90, np.uint8), np.where(np.arange(W) < 5, 0, 255).repeat(H).reshape(W, H).T], 2
    )
    Image.fromarray(la.astype(np.uint8), "LA").save(folder / "la.png")
    cmyk = np.zeros((H, W, 4), np.uint8)
    cmyk[..., 0] = 255
    Image.fromarray(cmyk, "CMYK").save(folder / "cmyk.tif")
    pal = Image.new("P", (W, H))
    pal.putpalette([40, 80, 120, 0, 0, 0] + [0] * (256 * 3 - 6))
    pal.putdata([int(x >= W // 2) for _ in range(H) for x in range(W)])
    pal.save(folder / "pal.png", transparency=1)
    pal_expected = np.where((np.arange(W) >= W // 2)[None, :, None], 255, np.uint8([40, 80, 120]))
    return {
        "g16.png": gray3(a16 >> 8),
        "rot6.png": up,
        "la.png": gray3(np.where(np.arange(W) < 5, 255, 90)[None, :].repeat(H, 0)),
        "cmyk.tif": np.broadcast_to(np.uint8([0, 255, 255]), (H, W, 3)),
        "pal.png": np.broadcast_to(pal_expected, (H, W, 3)).astype(np.uint8),
    }


class _Meta(Backend):
    """A backend stand-in that only carries the metadata the Embedder preprocesses with."""

    def __init__(self) -> None:
        self.meta = ModelMeta("cifar_resnet18", SIZE, 4, FMNIST_MEAN, FMNIST_STD, "c" * 64, "0")
        self.info = BackendInfo("ort-cpu", "cpu", "fp32", "none")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.ones((len(batch), 4), np.float32)


def test_runtime_training_and_export_decode_every_file_alike(tmp_path):
    from invspread_edge_export import calibration_set
    from invspread_edge_export.calibrate import CalibrationReader
    from invspread_edge_export.images import uint8_batch
    from invspread_edge_runtime.embedder import Embedder

    folder = tmp_path / "cases"
    expected = write_cases(folder)
    for name, array in expected.items():
        np.testing.assert_array_equal(np.asarray(load_image(folder / name)), array, err_msg=name)

    # the calibration folder needs 32 images: the same five files, copied under other names
    for n in range(7):
        for name in expected:
            shutil.copy(folder / name, folder / f"copy{n}-{name}")
    training = image_folder(folder)  # what `invedge train --data FOLDER` reads
    calib = calibration_set.from_folder(folder, count=None)
    assert list(calib.images.paths) == list(training.paths)
    reader_batches = []
    reader = CalibrationReader(calib, _Meta().meta, batch=8)
    while (batch := reader.get_next()) is not None:
        reader_batches.append(batch["images"])
    export_inputs = np.concatenate(reader_batches)
    with Embedder(_Meta(), decode_workers=1) as runtime:
        runtime_inputs = runtime.preprocess(training.paths)
        for i, path in enumerate(training.paths):
            key = path.name.split("-", 1)[1] if path.name.startswith("copy") else path.name
            want = to_uint8_chw(Image.fromarray(np.ascontiguousarray(expected[key])), SIZE)
            np.testing.assert_array_equal(runtime._load(path), want, err_msg=f"runtime {path.name}")
            np.testing.assert_array_equal(training.uint8(i, SIZE), want, err_msg=f"training {path.name}")
            np.testing.assert_array_equal(np.asarray(training.pil(i)), expected[key])
            assert calib.sha256[i] == hashlib.sha256(expected[key].tobytes()).hexdigest(), path.name
    np.testing.assert_array_equal(
        uint8_batch(training, SIZE), np.stack([training.uint8(i, SIZE) for i in range(len(training))])
    )
    np.testing.assert_array_equal(export_inputs, runtime_inputs)
    stacked = np.stack([training.uint8(i, SIZE) for i in range(len(training))])
    np.testing.assert_array_equal(runtime_inputs, normalize(stacked, FMNIST_MEAN, FMNIST_STD))


def test_new_suffixes_are_listed(tmp_path):
    from invspread_edge_runtime.preprocess import list_images

    for suffix in (".gif", ".tif", ".tiff", ".PNG"):
        Image.new("RGB", (4, 4)).save(tmp_path / f"a{suffix}", format="PNG" if suffix == ".PNG" else None)
    assert sorted(p.suffix for p in list_images(tmp_path)) == [".PNG", ".gif", ".tif", ".tiff"]
