"""The service's parts in this process: the dynamic batcher gives `Embedder.embed`'s vectors, batching
images that arrive together; the live gallery follows its file and refuses what does not fit."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest
from serve_client import image_files
from tiny import EMBEDDING_ATOL

from invspread_edge_runtime import Embedder, Index
from invspread_edge_runtime.serve.batcher import DynamicBatcher
from invspread_edge_runtime.serve.errors import ServeError
from invspread_edge_runtime.serve.gallery import LiveGallery
from invspread_edge_runtime.serve.images import decode


@pytest.fixture(scope="module")
def embedder(tiny_export):
    with Embedder(tiny_export / "model.onnx", backend="ort-cpu") as opened:
        yield opened


def uploads(paths, size):
    return [decode(p.read_bytes(), p.name, size, 10_000_000) for p in paths]


def test_concurrent_images_are_batched_and_match_embedder_embed(embedder, image_folder):
    paths = image_files(image_folder, 24)
    images = uploads(paths, embedder.meta.image_size)
    sizes: list[int] = []
    batcher = DynamicBatcher(embedder, max_batch=8, max_wait_ms=50, queue_size=64, on_batch=sizes.append)
    batcher.start()

    async def requests():  # 24 requests of one image each, all at once
        return await asyncio.gather(*(batcher.embed([image]) for image in images))

    try:
        got = np.concatenate(asyncio.run(requests()))
    finally:
        batcher.stop()
    np.testing.assert_allclose(got, embedder.embed(paths), atol=EMBEDDING_ATOL)
    assert sum(sizes) == 24 and max(sizes) == 8 and len(sizes) <= 6, sizes


def test_one_image_waits_at_most_max_wait(embedder, image_folder):
    image = uploads(image_files(image_folder, 1), embedder.meta.image_size)
    batcher = DynamicBatcher(embedder, max_batch=32, max_wait_ms=20, queue_size=4)
    batcher.start()

    async def timed():
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.embed(image)
        return loop.time() - started

    try:
        assert asyncio.run(timed()) < 2.0
    finally:
        batcher.stop()


def test_more_than_the_queue_is_413_and_a_stopped_batcher_503(embedder, image_folder):
    """(A full queue, 503 with Retry-After: test_serve_faults.py.)"""
    images = uploads(image_files(image_folder, 3), embedder.meta.image_size)
    batcher = DynamicBatcher(embedder, max_batch=1, max_wait_ms=1, queue_size=2)
    batcher.start()
    with pytest.raises(ServeError) as never:
        asyncio.run(batcher.embed(images))  # 3 images never fit a queue of 2
    assert never.value.status == 413 and "--queue 2" in never.value.message
    assert asyncio.run(batcher.embed(images[:2])).shape == (2, 32)
    batcher.stop()
    with pytest.raises(ServeError, match="shutting down"):
        asyncio.run(batcher.embed(images[:1]))


def test_the_live_gallery_follows_its_file(serve_index, tmp_path, embedder):
    path = tmp_path / "g.index"
    shutil.copyfile(serve_index, path)
    gallery = LiveGallery(path)
    query = Index.load(path).vectors[:1]
    with pytest.raises(ServeError) as past:
        gallery.search(query, 41, embedder.space_id)
    assert past.value.status == 422
    index = Index.load(path)
    index.remove(index.ids[:30])
    index.save(path)  # another writer (the CLI) replaced the file
    assert gallery.count() == 10
    held, result = gallery.search(query, 10, embedder.space_id)
    assert len(held) == 10 and result.indices.shape == (1, 10)
    index.remove(index.ids)
    index.save(path)
    with pytest.raises(ServeError) as empty:
        gallery.search(query, 1, embedder.space_id)
    assert empty.value.status == 409 and "empty" in empty.value.message


def test_decoding_refuses_with_the_right_status():
    with pytest.raises(ServeError) as unknown:
        decode(b"GIF89a? no", "x.gif", 28, 100)
    assert unknown.value.status in (400, 415)
    with pytest.raises(ServeError) as text:
        decode(b"hello", "x.txt", 28, 100)
    assert text.value.status == 415
