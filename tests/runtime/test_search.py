"""Search end to end in Python: real images → Embedder → Index → neighbours, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from invspread_edge_runtime import Embedder, Index
from invspread_edge_runtime.embedder import collect_images
from invspread_edge_runtime.embeddings.corpus import embed_to_folder
from invspread_edge_runtime.embeddings.reader import load_embeddings
from invspread_edge_runtime.errors import SpaceMismatchError


@pytest.fixture(scope="module")
def gallery(tiny_export, image_folder, tmp_path_factory):
    paths, root = collect_images([image_folder])
    out = tmp_path_factory.mktemp("search") / "gallery.emb"
    with Embedder(tiny_export / "model.onnx", backend="ort-cpu") as emb:
        embed_to_folder(emb, paths, root, out)
    return load_embeddings(out), paths


def test_each_gallery_image_finds_itself_first(gallery, tiny_export):
    emb, paths = gallery
    index = Index.from_embeddings(emb)
    with Embedder(tiny_export / "model.onnx", backend="ort-cpu") as embedder:
        queries = embedder.embed(paths[:10])
        result = index.search(queries, k=3, space_id=embedder.space_id)
    expected = [p.relative_to(paths[0].parents[1]).as_posix() for p in paths[:10]]
    assert [row[0] for row in result.ids] == expected
    np.testing.assert_allclose(result.scores[:, 0], 1.0, atol=1e-5)
    assert result.locations[0][0] == str(paths[0])
    records = json.loads(json.dumps(result.records([p.name for p in paths[:10]])))
    assert records[0]["query"] == paths[0].name
    assert [n["rank"] for n in records[0]["neighbours"]] == [1, 2, 3]


def test_quantized_queries_share_the_gallery_space(gallery, tiny_export):
    emb, paths = gallery
    index = Index.from_embeddings(emb)
    with Embedder(tiny_export, backend="ort-cpu") as embedder:  # picks model.int8-cpu.onnx here
        assert embedder.info.precision == "int8-cpu"
        result = index.search(embedder.embed(paths[:4]), k=2, space_id=embedder.space_id)
    assert result.scores.shape == (4, 2)


def test_queries_from_another_model_are_refused(gallery, tiny_export):
    emb, paths = gallery
    foreign = dict(emb.space) | {"space_id": "feedfacefeedface/32", "checkpoint_sha256": "feedface" * 8}
    index = Index.build(np.asarray(emb.vectors), emb.ids, foreign)
    with Embedder(tiny_export / "model.onnx", backend="ort-cpu") as embedder:
        queries = embedder.embed(paths[:1])
        with pytest.raises(SpaceMismatchError, match="another embedding space"):
            index.search(queries, k=1, space_id=embedder.space_id)


@pytest.mark.hardware
def test_gpu_search_graph_matches_the_cpu(gallery):
    """On a GPU machine with onnxruntime-gpu: the Gemm + TopK graph on CUDA against faiss/numpy."""
    emb, _ = gallery
    index = Index.from_embeddings(emb)
    queries = np.asarray(emb.vectors[:8], dtype=np.float32)
    cpu = index.search(queries, k=5)
    assert index.use_device("cuda") == "onnx-topk:cuda"
    gpu = index.search(queries, k=5)
    assert gpu.searcher == "onnx-topk:cuda" and gpu.ids == cpu.ids


def test_a_gallery_a_triton_server_embedded_names_the_model_to_pass_as_index_build_does():
    """Without a model, search says to pass the server's model in the spelling `invedge index build`
    prints (`--model triton:URL`), credentials left out."""
    from types import SimpleNamespace

    from invspread_edge_runtime.backends.triton import served_model
    from invspread_edge_runtime.errors import InvedgeError
    from invspread_edge_runtime.search.images import _model_of

    gallery = SimpleNamespace(model={"path": "http://user:secret@gpu-box:8000/invedge_shop"})
    with pytest.raises(InvedgeError) as caught:
        _model_of(gallery, None)
    said = str(caught.value)
    assert said == (
        "this gallery was embedded by the Triton model triton:http://gpu-box:8000/invedge_shop. "
        "Search it there with --model triton:http://gpu-box:8000/invedge_shop, or pass a local --model"
    )
    assert served_model("/runs/shop/export/model.onnx") is None and served_model(None) is None
