"""What both Python-backend models share: Triton's `pb_utils`, their config read at start, and the
answer to a request they cannot serve (imported inside Triton only)."""

from __future__ import annotations

import json
from typing import Any

from invspread_edge_runtime.metadata import ModelMeta

try:
    import triton_python_backend_utils as pb_utils  # Triton's Python backend puts it on the path
except ImportError:  # imported outside Triton (the package's import checks): never run there
    pb_utils = None


def model_settings(args: dict) -> tuple[dict[str, str], ModelMeta]:
    """The model's string parameters and the metadata they carry, from Triton's `initialize` args:
    the config the repository writer wrote is the one source of both."""
    config = json.loads(args["model_config"])
    props = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    return props, ModelMeta.from_props(props, source=config["name"])


def error_response(pb_utils: Any, message: str) -> Any:
    """An InferenceResponse carrying `message` as a client error (HTTP 400) where the Python
    backend has error codes (python_backend 23.10+, Triton 2.39+); older ones take the message alone
    (an internal error for the client)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)
