"""Our runtime as a Triton client (MODEL or `--backend` `triton:URL`, `Embedder(backend="triton:URL")`).

Against a real tritonserver (the session's `triton_server`: the repository `invedge deploy triton`
writes from `tiny_export`), over HTTP and gRPC on loopback: the same vectors and neighbours as the
local ONNX Runtime backend, and one-line refusals. URL parsing and an unreachable server need none.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from milvus_testing import error_line
from rtsp_testing import free_port
from tiny import invedge

from invspread_edge_runtime import Embedder
from invspread_edge_runtime.backends.triton import TritonBackend, import_client, parse_triton_url
from invspread_edge_runtime.embedder import collect_images
from invspread_edge_runtime.errors import ConfigError, MissingDependency, ModelError, UnreachableError

server_test = pytest.mark.xdist_group("triton")


# --- the backend string, no server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "protocol", "host", "port", "model", "tls"),
    [
        ("triton:http://10.0.0.5:8000/invedge_shop", "http", "10.0.0.5", 8000, "invedge_shop", False),
        ("triton:grpc://triton.local:9001", "grpc", "triton.local", 9001, None, False),
        ("triton:localhost:8000/m", "http", "localhost", 8000, "m", False),  # bare HOST:PORT: HTTP
        ("triton:grpc://host", "grpc", "host", 8001, None, False),  # tritonserver's default ports
        ("triton:https://host/", "http", "host", 8000, None, True),
        ("triton:grpcs://[::1]:8101/m", "grpc", "::1", 8101, "m", True),
    ],
)
def test_triton_urls_parse(text, protocol, host, port, model, tls):
    url = parse_triton_url(text)
    assert (url.protocol, url.host, url.port, url.model, url.tls) == (protocol, host, port, model, tls)
    assert url.auth is None and url.headers() is None


def test_credentials_are_sent_never_shown():
    url = parse_triton_url("triton:http://ann:s3cr%40t@host:8000/m")
    assert url.auth == "ann:s3cr@t" and url.headers()["authorization"].startswith("Basic ")
    assert url.server == "http://host:8000" and "s3cr" not in url.server and "s3cr" not in repr(url)
    with pytest.raises(ConfigError) as bad:
        parse_triton_url("triton:ftp://ann:s3cret@host:8000/m")
    assert "s3cret" not in str(bad.value) and "http" in str(bad.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("triton:ftp://host:8000", "ftp://"),
        ("triton:http://host:8000/a/b", "one path segment"),
        ("triton:http://host:99999", "Invalid Triton URL"),
        ("triton:http://host:8000/m?x=1", "query"),
        ("triton:http://:8000/m", "no host"),
        ("triton:http://host:0/m", "1..65535"),
        ("triton:grpc://host:65536", "1..65535"),
        ("triton:http://host:8000/..", "not a model name"),
        ("triton:http://host:8000/a..b", "not a model name"),
    ],
)
def test_bad_triton_urls_are_refused_in_one_line(text, says):
    with pytest.raises(ConfigError) as bad:
        parse_triton_url(text)
    assert says in str(bad.value) and "triton:grpc://HOST:PORT" in str(bad.value)


def test_other_backend_strings_name_triton_and_a_model_is_needed_without_it():
    with pytest.raises(ConfigError, match="triton:URL"):
        Embedder(None, backend="tritonx")
    with pytest.raises(ConfigError, match="or triton:URL"):
        Embedder(None, backend="ort-cpu")


def test_missing_tritonclient_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tritonclient.grpc", None)
    with pytest.raises(MissingDependency) as missing:
        import_client("grpc")
    assert "invspread-edge-runtime[triton]" in str(missing.value)


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_an_unreachable_server_is_one_line(scheme):
    port = free_port()  # bound, then closed: nothing listens there
    with pytest.raises(UnreachableError) as down:
        TritonBackend(f"triton:{scheme}://127.0.0.1:{port}/m")
    assert f"{scheme}://127.0.0.1:{port}" in str(down.value) and "tritonserver running" in str(down.value)


def test_embed_cli_with_an_unreachable_server(make_tiny_onnx, image_folder, tmp_path, capsys):
    model = make_tiny_onnx(tmp_path / "model.onnx")
    url = f"triton:http://127.0.0.1:{free_port()}"
    assert invedge("embed", model, image_folder, "--out", tmp_path / "x.emb", "--backend", url) == 1
    assert "no Triton server answers at http://127.0.0.1:" in error_line(capsys.readouterr().err)


# --- a real server -------------------------------------------------------------------------------


def _url(server, scheme: str, model: str | None = None) -> str:
    where = server.http_url if scheme == "http" else server.grpc_url
    return f"triton:{scheme}://{where}" + (f"/{model}" if model else "")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def local_vectors(tiny_export, image_folder):
    paths, _ = collect_images([image_folder])
    with Embedder(tiny_export, backend="ort-cpu") as local:  # the artifact the CPU repository serves
        return paths, local.embed(paths), local.space_id, local.info.precision


@server_test
@pytest.mark.parametrize(("scheme", "named"), [("http", False), ("grpc", True)])
def test_embedder_on_triton_equals_local(triton_server, local_vectors, scheme, named):
    paths, expected, space_id, precision = local_vectors
    model = triton_server.model if named else None  # left out: the server's one invedge ensemble
    with Embedder(None, backend=_url(triton_server, scheme, model), batch_size=64) as remote:
        vectors = remote.embed(paths)
        info = remote.info
        assert remote.space_id == space_id
        assert info.name == "triton" and info.precision == precision
        where = triton_server.http_url if scheme == "http" else triton_server.grpc_url
        assert info.device == f"triton {scheme}://{where} ({triton_server.model})"
        # another thread (a service's batcher) infers through the same backend
        batch = np.random.default_rng(0).standard_normal((3, 3, 28, 28)).astype(np.float32)
        seen: list[np.ndarray] = []
        worker = threading.Thread(target=lambda: seen.append(remote.backend.infer(batch)))
        worker.start()
        worker.join()
        np.testing.assert_allclose(seen[0], remote.backend.infer(batch), atol=1e-5)
    assert vectors.shape == expected.shape
    assert _cosines(vectors, expected).min() >= 0.9999


@server_test
@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_credentials_in_the_url_work_and_are_never_shown(triton_server, scheme):
    where = triton_server.http_url if scheme == "http" else triton_server.grpc_url
    with Embedder(None, backend=f"triton:{scheme}://ann:hunter2@{where}") as remote:
        said = f"{remote.info} {remote.notes}"
        assert remote.embed_uint8(np.zeros((2, 3, 28, 28), np.uint8)).shape == (2, remote.meta.embedding_dim)
    assert "hunter2" not in said and f"{scheme}://{where}" in said


@server_test
def test_a_batch_larger_than_the_model_takes_is_split(triton_server, tiny_export):
    with (
        Embedder(None, backend=_url(triton_server, "grpc")) as remote,
        Embedder(tiny_export, backend="ort-cpu") as local,
    ):
        size = remote.info.max_batch
        assert size is not None and size == served_max_batch(triton_server)
        batch = np.random.default_rng(1).standard_normal((size + 5, 3, 28, 28)).astype(np.float32)
        got = remote.backend.infer(batch)
        assert got.shape == (size + 5, remote.meta.embedding_dim)
        assert _cosines(got, local.backend.infer(batch)).min() >= 0.9999


def served_max_batch(server) -> int:
    """The embedding model's max_batch_size as the server reports it (HTTP JSON)."""
    import urllib.request

    with urllib.request.urlopen(
        f"http://{server.http_url}/v2/models/{server.model}/config", timeout=10
    ) as answer:
        ensemble = json.loads(answer.read())
    embedding = ensemble["parameters"]["invedge.triton.embedding_model"]["string_value"]
    with urllib.request.urlopen(
        f"http://{server.http_url}/v2/models/{embedding}/config", timeout=10
    ) as answer:
        return int(json.loads(answer.read())["max_batch_size"])


@server_test
def test_a_local_model_given_too_must_be_the_servers(triton_server, tiny_export, make_tiny_onnx, tmp_path):
    with Embedder(tiny_export, backend=_url(triton_server, "grpc")) as same:
        assert same.info.name == "triton"
    other = make_tiny_onnx(tmp_path / "other.onnx")  # another checkpoint: another embedding space
    with pytest.raises(ModelError, match="different models"):
        Embedder(other, backend=_url(triton_server, "grpc"))


@pytest.fixture(scope="module")
def gallery_index(tiny_export, image_folder, tmp_path_factory):
    """An index of `image_folder` embedded locally (ort-cpu)."""
    work = tmp_path_factory.mktemp("triton_search")
    assert invedge("embed", tiny_export, image_folder, "--out", work / "g.emb", "--backend", "ort-cpu") == 0
    assert invedge("index", "build", work / "g.emb", "--out", work / "g.index") == 0
    return work / "g.index"


def _search(capsys, *argv) -> dict:
    capsys.readouterr()
    assert invedge("search", *argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


@server_test
@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_search_on_triton_finds_the_local_neighbours(
    triton_server, gallery_index, image_folder, capsys, scheme
):
    queries = sorted(image_folder.glob("class*/*"))[::7]
    local = _search(capsys, gallery_index, *queries, "--k", "5", "--backend", "ort-cpu")
    remote = _search(capsys, gallery_index, *queries, "--k", "5", "--backend", _url(triton_server, scheme))
    assert remote["backend"] == "triton"
    for mine, theirs in zip(local["results"], remote["results"], strict=True):
        assert [n["id"] for n in theirs["neighbours"]] == [n["id"] for n in mine["neighbours"]]
        np.testing.assert_allclose(
            [n["score"] for n in theirs["neighbours"]], [n["score"] for n in mine["neighbours"]], atol=1e-4
        )


@server_test
def test_embed_on_triton_records_the_server_model(
    triton_server, tiny_export, local_vectors, image_folder, tmp_path, capsys
):
    from invspread_edge_runtime.embeddings.reader import load_embeddings

    paths, expected, _, _ = local_vectors
    url = _url(triton_server, "grpc", triton_server.model)
    out = tmp_path / "t.emb"
    assert invedge("embed", tiny_export, image_folder, "--out", out, "--backend", url) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "triton" and manifest["model"]["path"] == url[len("triton:") :]
    got = load_embeddings(out)
    order = [got.ids.index(p.relative_to(image_folder).as_posix()) for p in paths]
    assert _cosines(got.vectors[order], expected).min() >= 0.9999
    # its index is searched on that server; without it named the error says so, as the hint spells it
    capsys.readouterr()
    assert invedge("index", "build", out, "--out", tmp_path / "t.index") == 0
    hint = f"next: invedge search {tmp_path / 't.index'} QUERY.jpg --k 5 --model {url}"
    assert hint in capsys.readouterr().err  # the hint names the server, and it works
    assert invedge("search", tmp_path / "t.index", paths[0], "--k", "5", "--model", url) == 0
    capsys.readouterr()
    assert invedge("search", tmp_path / "t.index", paths[0]) == 1
    assert f"Search it there with --model {url}," in error_line(capsys.readouterr().err)


@server_test
def test_a_wrong_model_name_lists_ours(triton_server, gallery_index, image_folder, capsys):
    query = next(image_folder.glob("class0/*"))
    assert invedge("search", gallery_index, query, "--backend", _url(triton_server, "http", "nope")) == 1
    line = error_line(capsys.readouterr().err)
    assert "'nope'" in line and triton_server.model in line and "preprocess" not in line
    with pytest.raises(ModelError, match="not an embedding model"):
        TritonBackend(_url(triton_server, "grpc", f"{triton_server.model}_preprocess"))


@server_test
def test_a_gallery_of_another_space_is_refused(triton_server, make_tiny_onnx, image_folder, tmp_path, capsys):
    other = make_tiny_onnx(tmp_path / "other" / "model.onnx")  # another checkpoint's space
    assert invedge("embed", other, image_folder, "--out", tmp_path / "o.emb", "--backend", "ort-cpu") == 0
    assert invedge("index", "build", tmp_path / "o.emb", "--out", tmp_path / "o.index") == 0
    query = next(image_folder.glob("class0/*"))
    capsys.readouterr()
    assert invedge("search", tmp_path / "o.index", query, "--backend", _url(triton_server, "grpc")) == 1
    assert "space" in error_line(capsys.readouterr().err)


# --- what a server answers, without one: the refusals no repository of ours can produce ----------


class FakeClient:
    """Stands in for backends.triton._Client: `configs` by model name, all ready."""

    def __init__(self, configs: dict[str, dict], infer_error: str | None = None) -> None:
        from tritonclient.utils import InferenceServerException

        self.configs, self.infer_error = configs, infer_error
        self.failure = (InferenceServerException,)

    def ready(self) -> bool:
        return True

    def model_ready(self, name: str) -> bool:
        return name in self.configs

    def config(self, name: str) -> dict:
        return self.configs[name]

    def models(self) -> list[dict]:
        return [{"name": name, "version": "1", "state": "READY"} for name in self.configs]

    def infer(self, model, input_name, output_name, batch):
        raise self.failure[0](msg=self.infer_error)

    def close(self) -> None:
        pass


def _served(make_tiny_onnx, tmp_path, name: str, ensemble: bool) -> dict[str, dict]:
    """The configs of one invedge model (`name`, an ensemble over `name_onnx` when `ensemble`)."""
    from invspread_edge_runtime.metadata import read_model_meta

    meta = read_model_meta(make_tiny_onnx(tmp_path / f"{name}.onnx"))
    params = {k: {"string_value": v} for k, v in meta.to_props().items()}
    embedding = {
        "max_batch_size": 8,
        "input": [{"name": "images", "data_type": "TYPE_FP32"}],
        "output": [{"name": "embeddings", "data_type": "TYPE_FP32"}],
        "parameters": params,
    }
    if not ensemble:
        return {name: embedding}
    step = {"invedge.triton.embedding_model": {"string_value": f"{name}_onnx"}}
    return {name: {"platform": "ensemble", "parameters": params | step}, f"{name}_onnx": embedding}


def _open_with(monkeypatch, configs: dict[str, dict], url: str, infer_error: str | None = None):
    from invspread_edge_runtime.backends import triton

    monkeypatch.setattr(triton, "_Client", lambda _url: FakeClient(configs, infer_error))
    return TritonBackend(url)


def test_a_model_without_our_metadata_is_refused(monkeypatch, make_tiny_onnx, tmp_path):
    configs = _served(make_tiny_onnx, tmp_path, "invedge_a", ensemble=True) | {"resnet50": {"parameters": {}}}
    with pytest.raises(ModelError) as foreign:
        _open_with(monkeypatch, configs, "triton:http://h:8000/resnet50")
    assert "not an invedge model" in str(foreign.value) and "invedge_a" in str(foreign.value)


def test_the_one_ensemble_is_found_and_several_must_be_named(monkeypatch, make_tiny_onnx, tmp_path):
    one = _served(make_tiny_onnx, tmp_path, "invedge_a", ensemble=True)
    backend = _open_with(monkeypatch, one | {"resnet50": {}}, "triton:grpc://h:8001")
    assert backend.model_name == "invedge_a_onnx" and backend.info.max_batch == 8
    assert backend.info.model_path == "grpc://h:8001/invedge_a"
    two = one | _served(make_tiny_onnx, tmp_path, "invedge_b", ensemble=True)
    with pytest.raises(ModelError, match="serves 2 invedge models: invedge_a, invedge_b"):
        _open_with(monkeypatch, two, "triton:grpc://h:8001")
    alone = _served(make_tiny_onnx, tmp_path, "invedge_c", ensemble=False)
    with pytest.raises(ModelError, match=r"no invedge ensemble \(embedding models: invedge_c\)"):
        _open_with(monkeypatch, alone, "triton:grpc://h:8001")


def test_a_server_error_during_inference_is_an_engine_error(monkeypatch, make_tiny_onnx, tmp_path):
    from invspread_edge_runtime.errors import EngineError

    configs = _served(make_tiny_onnx, tmp_path, "invedge_a", ensemble=False)
    backend = _open_with(monkeypatch, configs, "triton:http://h:8000/invedge_a", infer_error="out of memory")
    with pytest.raises(EngineError, match="'invedge_a' at http://h:8000 failed: out of memory"):
        backend.infer(np.zeros((2, 3, 28, 28), np.float32))


# --- credentials are sent, never shown; the model and backend spellings ---------------------------

SECRET = "triton:http://u:sekret@127.0.0.1:1/invedge_x"


@pytest.mark.parametrize(
    "text",
    [
        "triton:u:sekret@host:8000",  # bare HOST:PORT
        "triton:http://u:sekret@host:8000/m",
        "triton:grpcs://u:sekret@[::1]:8001",
        "triton:u:sekret@host:99999",  # malformed: still hidden
        "triton:ftp://u:sekret@host/m",
    ],
)
def test_shown_hides_credentials_in_every_form(text):
    from invspread_edge_runtime.backends.triton import shown

    assert "sekret" not in shown(text) and shown(text).startswith("triton:")
    try:
        parse_triton_url(text)
    except ConfigError as bad:  # the malformed ones: the message hides them too
        assert "sekret" not in str(bad)


def test_a_triton_model_needs_no_backend_and_refuses_another():
    with pytest.raises(ConfigError) as other:
        Embedder(SECRET, backend="ort-cpu")
    said = str(other.value)
    assert "runs on its Triton server" in said and "sekret" not in said and "http://127.0.0.1:1" in said
    with pytest.raises(ConfigError) as bad:
        Embedder("model.onnx", backend="http://u:sekret@host:8000")  # an invalid backend, echoed safely
    assert "sekret" not in str(bad.value)


def test_the_resume_hint_leaves_the_password_out(image_folder, tmp_path):
    from invspread_edge_runtime.commands.embed import resume_hint
    from invspread_edge_runtime.embeddings.corpus import EmbedOptions

    for model, backend in ((SECRET, "auto"), (str(tmp_path / "m.onnx"), SECRET)):
        hint = resume_hint(
            EmbedOptions(model, [image_folder], tmp_path / "x.emb", backend=backend), "Resume with"
        )
        assert "sekret" not in hint and "password was left out" in hint
        assert "triton:http://127.0.0.1:1/invedge_x" in hint


def test_ray_and_verify_say_triton_is_not_available(tiny_export, image_folder, tmp_path, capsys):
    for argv in (
        ("embed", SECRET, image_folder, "--out", tmp_path / "r.emb", "--ray", "auto"),
        (
            "embed",
            tiny_export,
            image_folder,
            "--out",
            tmp_path / "r.emb",
            "--ray",
            "auto",
            "--backend",
            SECRET,
        ),
        ("verify", tiny_export, "--backend", SECRET),
    ):
        capsys.readouterr()
        assert invedge(*argv) == 1
        line = error_line(capsys.readouterr().err)
        assert "Triton is not available" in line and "sekret" not in line


def test_a_model_and_another_backend_is_one_line(image_folder, tmp_path, capsys):
    assert invedge("embed", SECRET, image_folder, "--out", tmp_path / "x.emb", "--backend", "ort-cpu") == 1
    line = error_line(capsys.readouterr().err)
    assert "runs on its Triton server, not on --backend ort-cpu" in line and "sekret" not in line


def test_the_credentials_go_as_an_authorization_header():
    """A loopback HTTP server that records one request's headers and answers 400 (not ready)."""
    import base64
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen: list[dict[str, str]] = []

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with HTTPServer(("127.0.0.1", 0), Echo) as echo:
        worker = threading.Thread(target=echo.handle_request)
        worker.start()
        with pytest.raises(UnreachableError) as answer:
            TritonBackend(f"triton:http://ann:s%40cret@127.0.0.1:{echo.server_port}/m")
        worker.join(10)
    assert seen and seen[0]["authorization"] == "Basic " + base64.b64encode(b"ann:s@cret").decode()
    assert "not ready" in str(answer.value) and "cret" not in str(answer.value)


def test_http_metadata_and_inference_have_their_own_timeouts(monkeypatch):
    from invspread_edge_runtime.backends import triton

    made: list[dict] = []

    class Recorder:
        def __init__(self, url, **kwargs):
            made.append(kwargs)

        def is_server_ready(self, headers=None):
            return True

        def infer(self, *args, headers=None, **kwargs):
            return type("Result", (), {"as_numpy": lambda self, name: np.zeros((1, 4), np.float32)})()

    client = triton._Client(parse_triton_url("triton:http://h:8000/m"))
    monkeypatch.setattr(client, "module", type("Module", (), {
        "InferenceServerClient": Recorder, "InferInput": client.module.InferInput,
        "InferRequestedOutput": client.module.InferRequestedOutput,
    }))  # fmt: skip
    assert client.ready() and client.ready()  # one client for metadata, kept
    client.infer("m", "images", "embeddings", np.zeros((1, 3, 4, 4), np.float32))
    assert [(m["connection_timeout"], m["network_timeout"]) for m in made] == [
        (triton.METADATA_TIMEOUT_S, triton.METADATA_TIMEOUT_S),
        (triton.METADATA_TIMEOUT_S, triton.INFER_TIMEOUT_S),
    ]
    assert (triton.METADATA_TIMEOUT_S, triton.INFER_TIMEOUT_S) == (10.0, 120.0)  # what docs/triton.md says


def test_an_exact_search_says_the_model_runs_on_the_triton_server(gallery_index):
    from invspread_edge_runtime.backends.base import BackendInfo
    from invspread_edge_runtime.index.gallery import Index

    info = BackendInfo(
        name="triton", device="triton http://h:8000 (m)", precision="fp32", model_path="http://h:8000/m"
    )
    why = Index.load(gallery_index).follow_backend(info)
    assert why == "the embedding model runs on the Triton server http://h:8000/m"


# --- a real server: MODEL triton:URL, a gRPC port over HTTP, resume, serve ------------------------


@server_test
@pytest.mark.parametrize("spelling", ["model", "backend"])
def test_the_server_is_the_model_or_the_backend(triton_server, local_vectors, spelling):
    paths, expected, space_id, _ = local_vectors
    url = _url(triton_server, "http")
    opened = Embedder(url) if spelling == "model" else Embedder(backend=url)
    with opened as remote:
        assert remote.space_id == space_id and remote.info.name == "triton"
        assert _cosines(remote.embed(paths[:5]), expected[:5]).min() >= 0.9999


@server_test
def test_the_grpc_port_asked_over_http_says_so(triton_server, image_folder, tmp_path, capsys):
    with pytest.raises(UnreachableError) as wrong:
        TritonBackend(f"triton:http://{triton_server.grpc_url}")
    assert f"Use triton:grpc://{triton_server.grpc_url}" in str(wrong.value)
    url = f"triton:{triton_server.grpc_url}"  # a bare HOST:PORT is HTTP
    assert invedge("embed", url, image_folder, "--out", tmp_path / "g.emb") == 1
    assert "a gRPC port? Use triton:grpc://" in error_line(capsys.readouterr().err)


@server_test
def test_a_triton_embed_resumes_however_the_server_is_named(
    triton_server, local_vectors, image_folder, tmp_path, capsys
):
    import shutil

    from invspread_edge_runtime.embeddings.reader import load_embeddings

    images = tmp_path / "images"
    shutil.copytree(image_folder, images)
    broken = next(images.glob("class0/*"))
    good = broken.read_bytes()
    broken.write_bytes(b"not an image")
    out, port = tmp_path / "t.emb", triton_server.http_port
    assert (
        invedge("embed", f"triton:http://127.0.0.1:{port}/{triton_server.model}", images, "--out", out) == 0
    )
    assert json.loads((out / "manifest.json").read_text())["failed_count"] == 1
    broken.write_bytes(good)
    named = f"triton:http://localhost:{port}/{triton_server.model}"  # the same model, reached by name
    assert invedge("embed", named, images, "--out", out, "--retry-failed") == 0
    done = load_embeddings(out)
    assert done.manifest["failed_count"] == 0 and len(done.ids) == len(local_vectors[0])
    capsys.readouterr()
    other = f"triton:http://127.0.0.1:{port}/{triton_server.model}_onnx"  # its embedding model: another name
    assert invedge("embed", other, images, "--out", out, "--retry-failed") == 1
    assert "another Triton model" in error_line(capsys.readouterr().err)


def test_a_resume_across_model_kinds_is_said_in_words():
    from invspread_edge_runtime.embeddings.parts import SERVED_MODEL, differs

    assert differs("model_sha256", SERVED_MODEL + "a", SERVED_MODEL + "b").startswith("another Triton model")
    assert differs("model_sha256", SERVED_MODEL + "a", "b") == (
        "another model (a Triton server's model, now a model file)"
    )


@server_test
def test_search_takes_the_server_as_its_model(triton_server, gallery_index, image_folder, capsys):
    queries = sorted(image_folder.glob("class*/*"))[::9]
    local = _search(capsys, gallery_index, *queries, "--backend", "ort-cpu")
    remote = _search(capsys, gallery_index, *queries, "--model", _url(triton_server, "grpc"))
    assert remote["backend"] == "triton"
    assert [[n["id"] for n in r["neighbours"]] for r in remote["results"]] == [
        [n["id"] for n in r["neighbours"]] for r in local["results"]
    ]


@server_test
def test_serve_with_a_triton_model_embeds_as_local(triton_server, gallery_index, local_vectors, tmp_path):
    serve = _serve_helpers()
    paths, expected, _, _ = local_vectors
    where = triton_server.grpc_url
    server = serve.start_server(f"triton:grpc://u:sekret@{where}", gallery_index, token=None, folder=tmp_path)
    with server:
        reply = serve.client.post_files(server.url, "/v1/embed", [(paths[0].name, paths[0].read_bytes())])
        assert reply.status == 200, reply.body
        vector = np.asarray(reply.json()["items"][0]["embedding"], np.float32)
        info = serve.client.get(server.url, "/v1/info").json()
    assert _cosines(vector[None], expected[:1]).min() >= 0.9999
    assert info["backend"]["name"] == "triton" and info["model"]["name"] == f"triton:grpc://{where}"
    assert "sekret" not in json.dumps(info) and "sekret" not in server.stderr()


def _serve_helpers():
    """The serve tests' subprocess starter and HTTP client (tests/runtime/serve/)."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "serve"
    loaded = {}
    for name, file in (("start", "conftest.py"), ("client", "serve_client.py")):
        spec = importlib.util.spec_from_file_location(f"_triton_serve_{name}", folder / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        loaded[name] = module
    return types.SimpleNamespace(start_server=loaded["start"].start_server, client=loaded["client"])
