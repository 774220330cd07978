"""A Triton Inference Server as a backend: the server runs the model, this process preprocesses.

Selected by the string `triton:URL`, given as the model (MODEL, `Embedder("triton:URL")`) or as the
backend (`--backend`, `Embedder(backend=...)`); URL = `http://HOST:PORT[/MODEL]` or
`grpc://HOST:PORT[/MODEL]` (`https://` and `grpcs://` for TLS; a bare `HOST:PORT` is HTTP). MODEL is
the ensemble `invedge deploy triton` writes, or its embedding model; left out, the server's one
invedge ensemble is used. The ensemble takes encoded images, so it is never called here: images
are decoded and normalised locally (as for every backend) and the float batch goes to the
embedding model the ensemble names in its `EMBEDDING_MODEL_KEY` parameter. The model metadata
(space id, preprocessing, precision) is read from the model config's parameters, which hold every
key of `ModelMeta.to_props()`.

`user:password@` in the URL is sent as an HTTP Basic `Authorization` header and never shown:
messages, `info` and `shown()` name the server as `SCHEME://HOST:PORT` only.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import re
import threading
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from .. import metadata
from ..deploy.triton.config import EMBEDDING_MODEL_KEY
from ..errors import ConfigError, EngineError, MissingDependency, ModelError, UnreachableError
from ..metadata import ModelMeta
from .base import Backend, BackendInfo

PREFIX = "triton:"
SCHEMES = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False), "grpcs": ("grpc", True)}
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}  # tritonserver's own defaults
FORMAT_PARAM = metadata.PREFIX + "format"
INPUT_PARAM = metadata.PREFIX + "input_name"
DEFAULT_INPUT = {f.name: f.default for f in dataclasses.fields(ModelMeta)}["input_name"]
METADATA_TIMEOUT_S = 10.0  # connecting, and each metadata call (ready, config, repository index)
INFER_TIMEOUT_S = 120.0  # one inference request (a cold model may load its engine first)
MODEL_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_.-]{1,128}$")  # one path segment, never `..`
INSTALL = "pip install 'invspread-edge-runtime[triton]'"
USAGE = "Use triton:http://HOST:PORT[/MODEL] or triton:grpc://HOST:PORT[/MODEL]"


def is_triton(text: str | os.PathLike[str] | None) -> bool:
    """True for a model or backend string naming a Triton server (`triton:URL`)."""
    return isinstance(text, str) and text.startswith(PREFIX)


def as_model(model: str | os.PathLike[str]) -> os.PathLike[str] | str:
    """A MODEL argument as commands keep it: `triton:URL` as text (a Path would fold its `//`),
    anything else as a Path."""
    from pathlib import Path

    return model if is_triton(model) else Path(model)


def shown(text: str | os.PathLike[str] | None) -> str:
    """A model or backend string as messages and printed commands show it: `triton:URL` as
    `triton:SCHEME://HOST:PORT[/MODEL]` (no credentials, whatever the URL's form), anything else
    without a URL's password."""
    from ..sources.spec import redact

    if not is_triton(text):
        return redact(str(text))
    try:
        return PREFIX + parse_triton_url(str(text)).shown
    except ConfigError:
        return _without_userinfo(str(text))


def served_model(path: str | os.PathLike[str] | None) -> str | None:
    """The `triton:URL` to pass (`--model triton:URL`, as `shown` prints it: no credentials) for a
    model path a manifest or index records, when a Triton server embedded it (the path is then the
    server's `SCHEME://HOST:PORT/MODEL`, never a file); None for a local model or no path."""
    text = str(path or "")
    return shown(PREFIX + text) if "://" in text else None


def _without_userinfo(text: str) -> str:
    """`text` (`triton:URL`, perhaps malformed) without anything up to an `@` in its host part."""
    head = PREFIX if is_triton(text) else ""
    rest = text[len(head) :]
    scheme, sep, tail = rest.partition("://")
    if not sep:
        scheme, tail = "", rest
    host, slash, path = tail.partition("/")
    return head + scheme + sep + host.rpartition("@")[2] + slash + path


@dataclass(frozen=True)
class TritonUrl:
    """Where the server is and which model to call; `auth` ("user:password") is never shown."""

    protocol: str  # "http" or "grpc"
    host: str
    port: int
    model: str | None = None
    tls: bool = False
    auth: str | None = field(default=None, repr=False)

    @property
    def server(self) -> str:
        """The server as messages name it: `SCHEME://HOST:PORT`, without credentials."""
        scheme = self.protocol + ("s" if self.tls else "")
        return f"{scheme}://{self.endpoint}"

    @property
    def shown(self) -> str:
        """The URL as messages name it: `SCHEME://HOST:PORT[/MODEL]`, without credentials."""
        return self.server + (f"/{self.model}" if self.model else "")

    @property
    def endpoint(self) -> str:
        """`HOST:PORT`, as tritonclient takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def headers(self) -> dict[str, str] | None:
        if self.auth is None:
            return None
        return {"authorization": "Basic " + base64.b64encode(self.auth.encode()).decode()}


def parse_triton_url(text: str) -> TritonUrl:
    """`triton:URL` (or the URL alone) → TritonUrl; ConfigError, without credentials, when malformed."""
    url = text[len(PREFIX) :] if is_triton(text) else text
    if "://" not in url:
        url = "http://" + url
    bad = f"Invalid Triton URL {_without_userinfo(text)!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        why = "the port must be 1..65535" if "port" in str(exc).lower() else str(exc)
        raise ConfigError(f"{bad}: {why}", USAGE) from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"{bad}: {scheme}:// is not http(s):// or grpc(s)://", USAGE)
    if not parts.hostname:
        raise ConfigError(f"{bad}: no host", USAGE)
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{bad}: the port must be 1..65535", USAGE)
    if parts.query or parts.fragment:
        raise ConfigError(f"{bad}: a query or fragment is not understood", USAGE)
    model = parts.path.strip("/") or None
    if model is not None and not MODEL_NAME.match(model):
        raise ConfigError(f"{bad}: {model!r} is not a model name (one path segment, no '..')", USAGE)
    protocol, tls = SCHEMES[scheme]
    auth = None
    if parts.username is not None:
        auth = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    port = DEFAULT_PORTS[protocol] if port is None else port
    return TritonUrl(protocol, parts.hostname, port, model, tls, auth)


def import_client(protocol: str) -> Any:
    """tritonclient's http or grpc module; MissingDependency naming the extra when absent."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise MissingDependency("tritonclient", "A Triton server as the backend", INSTALL) from exc
    return module


class _Client:
    """The few calls this backend makes, the same over HTTP and gRPC (their answers differ in form).

    tritonclient's HTTP client runs on gevent, whose connections belong to the thread that made
    them: each thread gets its own (a service infers on its batching thread, not the one that
    opened the model). Its network timeout is fixed when it is made, so a thread holds two: one for
    metadata calls (METADATA_TIMEOUT_S), one for inference (INFER_TIMEOUT_S). The gRPC client is
    thread-safe and takes a timeout per call: one is shared.
    """

    def __init__(self, url: TritonUrl) -> None:
        self.url, self.module = url, import_client(url.protocol)
        from tritonclient.utils import InferenceServerException

        # what a call raises when the server refuses, the connection fails, or the answer is no
        # HTTP (geventhttpclient's HTTPParseError, an HTTPException: a gRPC port asked over HTTP)
        self.failure: tuple[type[BaseException], ...] = (InferenceServerException, OSError, HTTPException)
        self._local = threading.local()
        self._grpc: Any = None
        self._made: list[Any] = []
        self._lock = threading.Lock()

    def _http(self, timeout: float) -> Any:
        """This thread's HTTP client whose network timeout is `timeout` (made on first use)."""
        clients: dict[float, Any] = self._local.__dict__.setdefault("clients", {})
        if timeout not in clients:
            clients[timeout] = self.module.InferenceServerClient(
                self.url.endpoint,
                connection_timeout=METADATA_TIMEOUT_S,
                network_timeout=timeout,
                ssl=self.url.tls,
            )
            with self._lock:
                self._made.append(clients[timeout])
        return clients[timeout]

    def _shared_grpc(self) -> Any:
        """The one gRPC client (made on first use)."""
        with self._lock:
            if self._grpc is None:
                self._grpc = self.module.InferenceServerClient(self.url.endpoint, ssl=self.url.tls)
                self._made.append(self._grpc)
            return self._grpc

    def _call(self, method: str, *args: Any, timeout: float = METADATA_TIMEOUT_S, **kwargs: Any) -> Any:
        if self.url.protocol == "grpc":
            client = self._shared_grpc()
            kwargs["client_timeout"] = timeout
        else:
            client = self._http(timeout)
        return getattr(client, method)(*args, headers=self.url.headers(), **kwargs)

    def ready(self) -> bool:
        return bool(self._call("is_server_ready"))

    def model_ready(self, name: str) -> bool:
        return bool(self._call("is_model_ready", name))

    def config(self, name: str) -> dict[str, Any]:
        if self.url.protocol == "grpc":
            return self._call("get_model_config", name, as_json=True).get("config", {})
        return self._call("get_model_config", name)

    def models(self) -> list[dict[str, Any]]:
        """The repository index: [{"name", "version", "state"}, ...]."""
        if self.url.protocol == "grpc":
            return self._call("get_model_repository_index", as_json=True).get("models", [])
        return list(self._call("get_model_repository_index"))

    def infer(self, model: str, input_name: str, output_name: str, batch: np.ndarray) -> np.ndarray:
        tensor = self.module.InferInput(input_name, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        wanted = [self.module.InferRequestedOutput(output_name)]
        result = self._call("infer", model, [tensor], outputs=wanted, timeout=INFER_TIMEOUT_S)
        return result.as_numpy(output_name)

    def close(self) -> None:
        """Close every client made, whichever thread made it. Closing another thread's gevent client
        may raise (its hub belongs to that thread) or leave its socket to the garbage collector:
        either way nothing more is sent through it (the backend is closed: no call follows), so its
        failure is ignored rather than turned into an error at shutdown."""
        with self._lock:
            made, self._made, self._grpc = self._made, [], None
        for client in made:
            with contextlib.suppress(Exception):
                client.close()


class TritonBackend(Backend):
    """Embeddings from a Triton server's invedge model (module docstring).

    `url`: `triton:URL` or a TritonUrl."""

    def __init__(self, url: str | TritonUrl) -> None:
        self.url = parse_triton_url(url) if isinstance(url, str) else url
        self._client = _Client(self.url)
        try:
            self._open()
        except BaseException:
            self._client.close()
            raise

    def _open(self) -> None:
        self._reach()
        asked = self.url.model or self._only_ensemble()
        config = self._ready_config(asked)
        params = parameters(config)
        embedding = params.get(EMBEDDING_MODEL_KEY)
        if embedding:
            config = self._ready_config(embedding)
            params = parameters(config)
        self.model_name = embedding or asked
        if FORMAT_PARAM not in params:
            ours = self._invedge_models()
            raise ModelError(
                f"Triton model {self.model_name!r} at {self.url.server} is not an invedge model (no "
                f"'{FORMAT_PARAM}' in its config's parameters)"
                + (f"; the server's invedge models: {', '.join(ours)}" if ours else ""),
                "Serve a repository written by 'invedge deploy triton' (or 'invedge export --triton DIR')",
            )
        self.meta = ModelMeta.from_props(
            params, source=f"Triton model {self.model_name!r} at {self.url.server}"
        )
        self._check_embedding_model(config)
        max_batch = int(config.get("max_batch_size") or 0) or None
        self.info = BackendInfo(
            name="triton",
            device=f"triton {self.url.server} ({asked})",
            precision=self.meta.precision,
            model_path=f"{self.url.server}/{asked}",
            max_batch=max_batch,
        )
        via = f" → embedding model {self.model_name}" if embedding else ""
        self.notes = (f"triton: {asked}{via} on {self.url.server} ({self.meta.precision})",)

    def _reach(self) -> None:
        """UnreachableError unless the server answers and is ready."""
        try:
            ready = self._client.ready()
        except self._client.failure as exc:
            raise UnreachableError(
                f"no Triton server answers at {self.url.server} ({_reason(exc)})",
                self._grpc_hint(exc)
                or f"Is tritonserver running? Check the host, the port ({self.url.protocol}: "
                f"{DEFAULT_PORTS[self.url.protocol]} by default) and the scheme",
            ) from exc
        if not ready:
            raise UnreachableError(
                f"the Triton server at {self.url.server} is not ready (a model failed to load, "
                "or it is starting)",
                "Check tritonserver's log, then try again",
            )

    def _grpc_hint(self, exc: BaseException) -> str | None:
        """The fix when an HTTP request got an answer that is no HTTP: the port is likely gRPC's."""
        if isinstance(exc, HTTPException) and self.url.protocol == "http":
            return f"Is {self.url.endpoint} a gRPC port? Use triton:grpc://{self.url.endpoint}"
        return None

    def _ready_config(self, name: str) -> dict[str, Any]:
        """The config of model `name`, which must be loaded and ready (else the ModelError lists ours)."""
        try:
            ready = self._client.model_ready(name)
            config = self._client.config(name) if ready else None
        except self._client.failure as exc:
            raise self._no_model(name, _reason(exc)) from exc
        if config is None:
            raise self._no_model(name, "not found or not ready")
        return config

    def _no_model(self, name: str, why: str) -> ModelError:
        ours = self._invedge_models()
        listed = f"its invedge models: {', '.join(ours)}" if ours else "it serves no invedge model"
        fix = (
            f"Use triton:{self.url.server}/MODEL with one of them"
            if ours
            else "Serve a repository written by 'invedge deploy triton' (or 'invedge export --triton DIR')"
        )
        return ModelError(f"Triton model {name!r} at {self.url.server}: {why}; {listed}", fix)

    def _ours(self) -> tuple[list[str], list[str]]:
        """The server's ready invedge models: (ensembles, embedding models), each sorted."""
        ensembles, embedding = set(), set()
        for entry in self._client.models():
            name = str(entry.get("name", ""))
            if entry.get("state") != "READY" or not name:
                continue
            config = self._client.config(name)
            params = parameters(config)
            if EMBEDDING_MODEL_KEY in params:
                ensembles.add(name)
            elif FORMAT_PARAM in params and _takes_floats(config, params.get(INPUT_PARAM, DEFAULT_INPUT)):
                embedding.add(name)
        return sorted(ensembles), sorted(embedding)

    def _invedge_models(self) -> list[str]:
        """Names of the models this backend can call, ensembles first ([] when they cannot be listed)."""
        try:
            ensembles, embedding = self._ours()
        except self._client.failure:
            return []  # the list is a courtesy in an error message
        return ensembles + embedding

    def _only_ensemble(self) -> str:
        """The server's one invedge ensemble (no model named in the URL)."""
        try:
            ensembles, embedding = self._ours()
        except self._client.failure as exc:
            raise EngineError(
                f"Triton server {self.url.server} did not list its models: {_reason(exc)}",
                self._grpc_hint(exc) or "Check tritonserver's log",
            ) from exc
        if len(ensembles) == 1:
            return ensembles[0]
        if not ensembles:
            also = f" ensemble (embedding models: {', '.join(embedding)})" if embedding else " model"
            raise ModelError(
                f"the Triton server at {self.url.server} serves no invedge{also}",
                "Serve a repository written by 'invedge deploy triton' (or 'invedge export --triton DIR'), "
                "or name the model: triton:URL/MODEL",
            )
        raise ModelError(
            f"the Triton server at {self.url.server} serves {len(ensembles)} invedge models: "
            f"{', '.join(ensembles)}",
            f"Name one: triton:{self.url.server}/{ensembles[0]}",
        )

    def _check_embedding_model(self, config: dict[str, Any]) -> None:
        """The model called must take the float batch and give the embedding (names from the metadata)."""
        inputs = [str(t.get("name")) for t in config.get("input", [])]
        outputs = {str(t.get("name")) for t in config.get("output", [])}
        if not _takes_floats(config, self.meta.input_name) or self.meta.output_name not in outputs:
            raise ModelError(
                f"Triton model {self.model_name!r} at {self.url.server} is not an embedding model (no "
                f"FP32 input {self.meta.input_name!r} and output {self.meta.output_name!r}: inputs "
                f"{', '.join(inputs) or 'none'})",
                "Name the invedge ensemble or its embedding model (…_onnx, …_trt) in the URL",
            )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        dim = self.meta.embedding_dim
        if len(batch) == 0:
            return np.zeros((0, dim), dtype=np.float32)
        step = self.info.max_batch or len(batch)
        parts = []
        for start in range(0, len(batch), step):
            try:
                out = self._client.infer(
                    self.model_name, self.meta.input_name, self.meta.output_name, batch[start : start + step]
                )
            except self._client.failure as exc:
                raise EngineError(
                    f"Triton model {self.model_name!r} at {self.url.server} failed: {_reason(exc)}",
                    self._grpc_hint(exc) or "Check tritonserver's log",
                ) from exc
            rows = min(step, len(batch) - start)
            if out is None or np.shape(out) != (rows, dim):
                raise EngineError(
                    f"Triton model {self.model_name!r} at {self.url.server} gave no or a wrongly shaped "
                    f"{self.meta.output_name!r}",
                    "Check that the repository was written by 'invedge deploy triton' for this export",
                )
            parts.append(np.asarray(out, dtype=np.float32))
        return np.concatenate(parts)

    def close(self) -> None:
        self._client.close()


def parameters(config: dict[str, Any]) -> dict[str, str]:
    """A model config's string parameters (`{"key": {"string_value": "v"}}`) as a plain dict."""
    raw = config.get("parameters") or {}
    return {str(k): str(v.get("string_value", "")) for k, v in raw.items() if isinstance(v, dict)}


def _takes_floats(config: dict[str, Any], input_name: str) -> bool:
    """True when the model config has the FP32 input `input_name` (an embedding model, not the
    preprocessing model, which takes encoded bytes)."""
    return any(
        t.get("name") == input_name and t.get("data_type") == "TYPE_FP32" for t in config.get("input", [])
    )


def _reason(exc: BaseException) -> str:
    """tritonclient's message in one line (its exceptions keep it in `message()`)."""
    message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    text = " ".join(str(message or exc.__class__.__name__).split())
    return text.rstrip(".")
