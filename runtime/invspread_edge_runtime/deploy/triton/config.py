"""The `config.pbtxt` of each model in the repository, as protobuf text (Triton's `ModelConfig`).

Every name, data type and shape is written out (Triton's auto-complete is not relied on), the batch
dimension left out (`max_batch_size` > 0 makes it implicit). Every model carries the export's
metadata (`ModelMeta.to_props()`) as string `parameters`, so a client rebuilds it with
`ModelMeta.from_props` from the model's configuration alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ...bounds import DEFAULT_MAX_PIXELS
from ...metadata import ModelMeta

IMAGE = "IMAGE"  # the ensemble's input: encoded image bytes, one per batch row
EMBEDDING = "EMBEDDING"  # the ensemble's output: the L2-normalised vector
EMBEDDING_MODEL_KEY = "invedge.triton.embedding_model"
PREPROCESS_MODEL_KEY = "invedge.triton.preprocess_model"
MAX_PIXELS_KEY = "invedge.triton.max_pixels"  # the preprocessing model's largest image (DEFAULT_MAX_PIXELS)
THREADS_KEY = "invedge.triton.threads"
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}  # ONNX Runtime backend's precision_mode


@dataclass(frozen=True)
class Batching:
    """What every batching model shares: `max_batch_size`, the dynamic batcher, the instances."""

    max_batch: int
    preferred: tuple[int, ...]
    queue_delay_us: int
    instances: int


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"n": "\n", "r": "\r"}
_STRING = r'"((?:[^"\\]|\\.)*)"'
_PARAMETER = re.compile(rf"parameters {{ key: {_STRING} value: {{ string_value: {_STRING} }} }}")


def quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + "".join(_ESCAPES.get(char, char) for char in text) + '"'


def unquote(body: str) -> str:
    """The text of a string literal `quote` wrote (without its quotes)."""
    return re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(1)), body)


def read_parameters(text: str) -> dict[str, str]:
    """The string `parameters` of a config.pbtxt that `parameters` wrote (ours: the README lists
    the repository's ensembles from them without a protobuf dependency)."""
    return {unquote(key): unquote(value) for key, value in _PARAMETER.findall(text)}


def tensor(name: str, data_type: str, dims: Sequence[int]) -> str:
    return f"  {{ name: {quote(name)} data_type: {data_type} dims: [ {', '.join(map(str, dims))} ] }}"


def tensors(key: str, items: Iterable[str]) -> str:
    return f"{key} [\n" + ",\n".join(items) + "\n]"


def parameters(values: dict[str, str]) -> str:
    return "\n".join(
        f"parameters {{ key: {quote(k)} value: {{ string_value: {quote(v)} }} }}" for k, v in values.items()
    )


def scheduling(batching: Batching, kind: str, dla_core: int | None = None) -> str:
    """`dynamic_batching` and `instance_group` (`kind`: KIND_CPU or KIND_GPU; `dla_core`: a
    TensorRT plan built for that DLA core, which Triton's TensorRT backend runs it on)."""
    preferred = ", ".join(map(str, batching.preferred))
    dla = "" if dla_core is None else f" secondary_devices [ {{ kind: KIND_NVDLA device_id: {dla_core} }} ]"
    return (
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {batching.queue_delay_us}\n}}\n"
        f"instance_group [ {{ kind: {kind} count: {batching.instances}{dla} }} ]"
    )


def model_io(meta: ModelMeta) -> str:
    """The embedding model's input and output, as the export's graph has them (batch left out)."""
    size = meta.image_size
    return "\n".join(
        [
            tensors("input", [tensor(meta.input_name, "TYPE_FP32", [3, size, size])]),
            tensors("output", [tensor(meta.output_name, "TYPE_FP32", [meta.embedding_dim])]),
        ]
    )


def join(*blocks: str) -> str:
    return "\n".join(block for block in blocks if block) + "\n"


def onnx_config(
    name: str, meta: ModelMeta, batching: Batching, gpu: bool, trt_precision: str | None, workspace_mb: int
) -> str:
    """The embedding model on Triton's ONNX Runtime backend (`1/model.onnx`); `trt_precision`:
    run it through TensorRT inside ONNX Runtime (the execution accelerator) at that precision."""
    accelerator = ""
    if trt_precision is not None:
        workspace = workspace_mb * 1024 * 1024
        accelerator = (
            "optimization { execution_accelerators {\n"
            '  gpu_execution_accelerator : [ { name : "tensorrt"\n'
            f'    parameters {{ key: "precision_mode" value: {quote(TRT_PRECISION[trt_precision])} }}\n'
            f'    parameters {{ key: "max_workspace_size_bytes" value: "{workspace}" }} }} ]\n'
            "} }"
        )
    return join(
        f"name: {quote(name)}",
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {batching.max_batch}",
        model_io(meta),
        scheduling(batching, "KIND_GPU" if gpu else "KIND_CPU"),
        accelerator,
        parameters(meta.to_props()),
    )


def plan_config(name: str, meta: ModelMeta, batching: Batching, dla_core: int | None = None) -> str:
    """The embedding model as a TensorRT plan built on this GPU (`1/model.plan`), or for its DLA core."""
    return join(
        f"name: {quote(name)}",
        'platform: "tensorrt_plan"',
        f"max_batch_size: {batching.max_batch}",
        model_io(meta),
        scheduling(batching, "KIND_GPU", dla_core),
        parameters(meta.to_props()),
    )


def python_embedding_config(name: str, meta: ModelMeta, batching: Batching, threads: int) -> str:
    """The embedding model as a Python-backend model running ONNX Runtime on the CPU (`1/model.onnx`
    beside `1/model.py`): for Triton builds without the ONNX Runtime backend."""
    return join(
        f"name: {quote(name)}",
        'backend: "python"',
        f"max_batch_size: {batching.max_batch}",
        model_io(meta),
        scheduling(batching, "KIND_CPU"),
        parameters({**meta.to_props(), THREADS_KEY: str(threads)}),
    )


def preprocess_config(
    name: str, meta: ModelMeta, batching: Batching, max_pixels: int = DEFAULT_MAX_PIXELS
) -> str:
    """Encoded image bytes → the embedding model's input, with the toolkit's decoder (Python backend)."""
    size = meta.image_size
    return join(
        f"name: {quote(name)}",
        'backend: "python"',
        f"max_batch_size: {batching.max_batch}",
        tensors("input", [tensor(IMAGE, "TYPE_STRING", [1])]),
        tensors("output", [tensor(meta.input_name, "TYPE_FP32", [3, size, size])]),
        scheduling(batching, "KIND_CPU"),
        parameters({**meta.to_props(), MAX_PIXELS_KEY: str(max_pixels)}),
    )


def ensemble_config(name: str, meta: ModelMeta, max_batch: int, preprocess: str, embedding: str) -> str:
    """The model clients call: IMAGE (bytes) → `preprocess` → `embedding` → EMBEDDING."""
    pre_step = (
        f"  {{ model_name: {quote(preprocess)} model_version: -1\n"
        f"    input_map {{ key: {quote(IMAGE)} value: {quote(IMAGE)} }}\n"
        f'    output_map {{ key: {quote(meta.input_name)} value: "preprocessed" }} }}'
    )
    embed_step = (
        f"  {{ model_name: {quote(embedding)} model_version: -1\n"
        f'    input_map {{ key: {quote(meta.input_name)} value: "preprocessed" }}\n'
        f"    output_map {{ key: {quote(meta.output_name)} value: {quote(EMBEDDING)} }} }}"
    )
    return join(
        f"name: {quote(name)}",
        'platform: "ensemble"',
        f"max_batch_size: {max_batch}",
        tensors("input", [tensor(IMAGE, "TYPE_STRING", [1])]),
        tensors("output", [tensor(EMBEDDING, "TYPE_FP32", [meta.embedding_dim])]),
        f"ensemble_scheduling {{ step [\n{pre_step},\n{embed_step}\n] }}",
        parameters({**meta.to_props(), EMBEDDING_MODEL_KEY: embedding, PREPROCESS_MODEL_KEY: preprocess}),
    )
