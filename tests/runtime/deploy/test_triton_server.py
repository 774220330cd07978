"""A real Triton server (PyTriton's tritonserver, Python backend) serving the repository
`invedge deploy triton --embedding python --device cpu` writes: raw JPEG and PNG bytes over HTTP
and gRPC give the vectors `invedge embed` gives for the same files; requests that arrive together
are batched by Triton; a row that is not an image fails its request, naming the row."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tiny import EMBEDDING_ATOL
from triton_testing import require, statistics

httpclient = require("tritonclient.http")
grpcclient = require("tritonclient.grpc")
InferenceServerException = require("tritonclient.utils").InferenceServerException

pytestmark = pytest.mark.xdist_group("triton")
CLIENTS = {"http": httpclient, "grpc": grpcclient}


def image_files(folder: Path) -> list[Path]:
    files = sorted(folder.rglob("*.jpg"))[:4] + sorted(folder.rglob("*.png"))[:4]
    assert {p.suffix for p in files} == {".jpg", ".png"}
    return files


def client_for(server, protocol: str):
    url = server.http_url if protocol == "http" else server.grpc_url
    return CLIENTS[protocol].InferenceServerClient(url)


def infer(server, protocol: str, blobs: list[bytes], model: str | None = None, output: str = "EMBEDDING"):
    module = CLIENTS[protocol]
    data = np.array([[blob] for blob in blobs], dtype=object)  # (batch, 1) BYTES
    image = module.InferInput("IMAGE", list(data.shape), "BYTES")
    image.set_data_from_numpy(data)
    return client_for(server, protocol).infer(model or server.model, [image]).as_numpy(output)


@pytest.fixture(scope="module")
def expected(tiny_export, image_folder) -> tuple[list[Path], np.ndarray]:
    """The files and `invedge embed`'s vectors of them, on the artifact the repository serves."""
    from invspread_edge_runtime.embedder import Embedder

    files = image_files(image_folder)
    with Embedder(tiny_export, backend="ort-cpu") as embedder:
        return files, embedder.embed(files)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_raw_images_give_the_vectors_of_invedge_embed(triton_server, expected, protocol):
    files, vectors = expected
    got = infer(triton_server, protocol, [p.read_bytes() for p in files])
    assert got.shape == vectors.shape and got.dtype == np.float32
    cosine = np.sum(got * vectors, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(vectors, axis=1))
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the same pixels (the preprocessing test) through the same ONNX Runtime session code: equal here
    # bit for bit, but another CPU's kernels may sum in another order per batch size (tiny.EMBEDDING_ATOL)
    np.testing.assert_allclose(got, vectors, rtol=0, atol=EMBEDDING_ATOL)


def test_the_preprocessing_model_gives_the_pixels_of_invedge_embed(triton_server, tiny_export, expected):
    from invspread_edge_runtime.embedder import Embedder

    files, _ = expected
    got = infer(triton_server, "http", [p.read_bytes() for p in files], "invedge_tiny_preprocess", "images")
    with Embedder(tiny_export, backend="ort-cpu") as embedder:
        np.testing.assert_array_equal(got, embedder.preprocess(files))


def test_the_model_metadata_is_in_the_served_config(triton_server, tiny_export):
    from invspread_edge_runtime.metadata import ModelMeta, read_model_meta

    config = client_for(triton_server, "grpc").get_model_config(triton_server.model).config
    props = {key: p.string_value for key, p in config.parameters.items()}
    assert ModelMeta.from_props(props) == read_model_meta(tiny_export / "model.int8-cpu.onnx")
    assert props["invedge.triton.embedding_model"] == "invedge_tiny_onnx"


def test_concurrent_requests_are_batched(triton_server, expected):
    """Single-image requests sent together: Triton's dynamic batcher runs them in fewer executions
    (the fixture's queue delay is 20 ms), each answer still that image's vector."""
    files, vectors = expected
    model = "invedge_tiny_onnx"
    before = statistics(triton_server, model)
    start = threading.Barrier(16)

    def one(i: int) -> np.ndarray:
        start.wait(timeout=30)
        return infer(triton_server, "http", [files[i % len(files)].read_bytes()])[0]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16), timeout=120))
    for i, answer in enumerate(answers):
        assert float(answer @ vectors[i % len(files)]) >= 0.9999
    after = statistics(triton_server, model)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 16 and executions < inferences, (inferences, executions)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bytes_that_are_no_image_fail_their_request_naming_the_row(triton_server, expected, protocol):
    files, vectors = expected
    with pytest.raises(InferenceServerException, match="row 1 is not an image") as bad:
        infer(triton_server, protocol, [files[0].read_bytes(), b"not an image"])
    assert bad.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")  # the client's fault, not a 500
    truncated = files[0].read_bytes()[:40]
    with pytest.raises(InferenceServerException, match="row 0"):
        infer(triton_server, protocol, [truncated])
    got = infer(triton_server, protocol, [files[0].read_bytes()])  # the server is still serving
    assert float(got[0] @ vectors[0]) >= 0.9999


def test_the_readme_curl_call_works(triton_server, expected, tmp_path):
    """The repository README's curl command (KServe v2 binary tensor extension), run as written."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    files, vectors = expected
    readme = (triton_server.repo / "README.md").read_text()
    block = readme.split("## Call it")[1].split("Python, ")[0]
    script = "\n".join(line[4:] for line in block.splitlines() if line.startswith("    "))
    script = script.replace("localhost:8000", triton_server.http_url).replace("query.jpg", str(files[0]))
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (output,) = json.loads(done.stdout)["outputs"]
    assert output["name"] == "EMBEDDING" and float(np.asarray(output["data"]) @ vectors[0]) >= 0.9999
