"""Embedder: real images through the exported tiny model, equal to the training side's evaluation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from tiny import EMBEDDING_ATOL

from invspread_edge_runtime.embedder import Embedder, collect_images
from invspread_edge_runtime.embeddings.corpus import embed_to_folder
from invspread_edge_runtime.embeddings.reader import load_embeddings
from invspread_edge_runtime.errors import DataError, ModelError
from invspread_edge_runtime.evaluation.accuracy import cosine_stats


@pytest.fixture(scope="module")
def embedder(tiny_export):
    with Embedder(tiny_export / "model.onnx", backend="ort-cpu", threads=1) as emb:
        yield emb


@pytest.fixture(scope="module")
def mixed_folder(image_folder, tmp_path_factory):
    """The 40 Fashion-MNIST files plus resized, non-square, grayscale and RGBA variants."""
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(image_folder, root / "fmnist")
    sources = sorted((root / "fmnist").rglob("*.png"))[:4]
    (root / "variants").mkdir()
    for n, src in enumerate(sources):
        img = Image.open(src).convert("L")
        img.resize((45, 70), Image.BICUBIC).save(root / "variants" / f"tall{n}.jpg", quality=90)
        img.resize((61, 33), Image.BICUBIC).convert("RGB").save(root / "variants" / f"wide{n}.png")
        img.convert("RGBA").resize((40, 40)).save(root / "variants" / f"rgba{n}.png")
    return root


def test_embeddings_are_unit_rows_in_input_order_whatever_the_batching(embedder, tiny_export, mixed_folder):
    paths, _ = collect_images([mixed_folder])
    reference = embedder.embed(paths)
    assert reference.shape == (len(paths), 32) and reference.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-5)
    with Embedder(
        tiny_export / "model.onnx", backend="ort-cpu", threads=1, batch_size=7, decode_workers=3
    ) as other:
        np.testing.assert_allclose(other.embed(paths), reference, rtol=0, atol=EMBEDDING_ATOL)
        pil = [Image.open(p) for p in paths[:5]]
        np.testing.assert_allclose(other.embed(pil), reference[:5], rtol=0, atol=EMBEDDING_ATOL)
    direct = embedder.backend.infer(embedder.preprocess(paths))  # one batch of all
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(direct, reference, rtol=0, atol=EMBEDDING_ATOL)


def test_equal_to_the_training_side_evaluation(tiny_run, tiny_export, mixed_folder):
    """Before the model: max |Δ| ≤ 1e-5 against the training side's input; after: cosine ≥ 0.99999."""
    torch = pytest.importorskip("torch")
    from invspread_edge.augment import normalize_uint8
    from invspread_edge.checkpoint import build_model, load_checkpoint
    from invspread_edge.data import UInt8Source
    from invspread_edge_runtime.evaluation.datasets import open_dataset

    images = open_dataset(str(mixed_folder))
    ckpt = load_checkpoint(tiny_run)
    size, mean, std = ckpt.config["image_size"], tuple(ckpt.config["mean"]), tuple(ckpt.config["std"])
    batch = next(UInt8Source(images, size).batches([np.arange(len(images))]))
    assert not batch.failed
    torch_input = normalize_uint8(batch.images, mean, std)
    model = build_model(ckpt).eval()
    with torch.no_grad():
        torch_out = model(torch_input).numpy()

    with Embedder(tiny_export / "model.onnx", backend="ort-cpu") as emb:  # the FP32 artifact
        runtime_input = emb.preprocess(images.paths)
        runtime_out = emb.embed(images.paths)
    assert runtime_input.shape == tuple(torch_input.shape)
    assert np.abs(runtime_input - torch_input.numpy()).max() <= 1e-5
    _, min_cos = cosine_stats(torch_out, runtime_out)
    assert min_cos >= 0.99999
    # An untrained network maps all images close together; the two sides must still agree far
    # more closely than any two different images do.
    torch_unit = torch_out / np.linalg.norm(torch_out, axis=1, keepdims=True)
    gap = np.abs(torch_unit - runtime_out).max()
    between = np.abs(torch_unit[:, None] - torch_unit[None]).max(axis=2)
    print(
        f"parity: min cosine {min_cos:.7f}, max |Δ| {gap:.2e}, closest two images {between[between > 0].min():.2e}"
    )
    assert gap < 0.1 * between[between > 0].min()


def test_unreadable_images_are_skipped_and_counted(embedder, image_folder, tmp_path):
    good = sorted(image_folder.rglob("*.png"))[:5]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in good:
        shutil.copy(p, folder / p.name)
    (folder / "not_an_image.jpg").write_bytes(b"hello")
    (folder / "empty.png").write_bytes(b"")
    jpeg = (folder / good[0].name).with_suffix(".jpg")
    Image.open(good[0]).convert("RGB").save(jpeg)
    (folder / "truncated.jpg").write_bytes(jpeg.read_bytes()[:60])
    paths, _ = collect_images([folder])
    batches = list(embedder.embed_batches(paths))
    failed = [paths[p].name for b in batches for p, _ in b.failures]
    assert sorted(failed) == ["empty.png", "not_an_image.jpg", "truncated.jpg"]
    assert sum(len(b.positions) for b in batches) == 6
    with pytest.raises(DataError, match="unreadable"):
        embedder.embed(paths)
    assert embedder.embed(paths, skip_unreadable=True).shape == (6, 32)


def test_a_model_without_our_metadata_is_refused(tiny_export, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_export / "model.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ModelError, match="not an invspread-edge model"):
        Embedder(tmp_path / "foreign.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\xff" * 100)
    with pytest.raises(ModelError):
        Embedder(tmp_path / "garbage.onnx")


def test_embedding_a_folder_resumes_after_an_interruption(embedder, mixed_folder, tmp_path):
    paths, root = collect_images([mixed_folder])
    full = embed_to_folder(embedder, paths, root, tmp_path / "full.emb")
    assert full["count"] == len(paths) and full["failed_count"] == 0

    small = Embedder(embedder.backend, batch_size=8)
    calls = []

    def stop_after_two_batches(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # the initial call, then two batches
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_to_folder(
            small, paths, root, tmp_path / "part.emb", part_size=100, on_progress=stop_after_two_batches
        )
    resumed = embed_to_folder(small, paths, root, tmp_path / "part.emb", part_size=100)
    assert resumed["resumed"] == 16 and resumed["count"] == len(paths)  # flushed on Ctrl-C
    a, b = load_embeddings(tmp_path / "full.emb"), load_embeddings(tmp_path / "part.emb")
    order = {item: i for i, item in enumerate(a.ids)}
    assert sorted(b.ids) == sorted(a.ids)
    np.testing.assert_allclose(
        np.asarray(b.vectors), np.asarray(a.vectors)[[order[i] for i in b.ids]], rtol=0, atol=EMBEDDING_ATOL
    )  # batches of 8 against batches of 64


def test_each_image_file_is_found_once_however_often_it_is_given(image_folder, tmp_path):
    from invspread_edge_runtime.embedder import find_images

    one = sorted((image_folder / "class1").glob("*.png"))[0]
    link = tmp_path / "link.png"
    link.symlink_to(one)
    found = find_images([one, image_folder / "class1", one, link])
    assert len(found.paths) == len(list((image_folder / "class1").iterdir()))
    assert found.paths[0] == one and len(set(found.paths)) == len(found.paths)
    assert found.duplicates == [one, one, link]  # named twice, inside its folder, and a link to it
    assert "3 image files given more than once" in found.note()
    assert collect_images([one, one])[0] == [one]
    assert find_images([image_folder]).note() is None


def test_an_unreadable_image_is_reported_by_name_and_reason_without_a_hint(embedder, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 nope")
    (failure,) = next(iter(embedder.embed_batches([bad]))).failures
    assert failure[0] == 0 and str(bad) in failure[1] and "Check the file" not in failure[1]
