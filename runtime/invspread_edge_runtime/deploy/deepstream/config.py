"""The nvinfer secondary-GIE config, and the calib.table nvinfer needs beside a Q/DQ graph.

INT8 with an explicitly quantized (Q/DQ) graph: TensorRT takes every scale from the graph and never
calibrates ("Calibrator won't be used in explicit precision mode"). But nvinfer's model builder
(libs/nvdsinfer/nvdsinfer_model_builder.cpp, configCommonOptions; read in the DeepStream 6.1/6.2-era
source and in a copy labelled DeepStream 8.0, not in 7.x) sets TensorRT's INT8 flag only when it
has a calibrator, which it makes when `int8-calib-file` names a readable file; without one it logs
"INT8 calibration file not specified. Trying FP16 mode." and builds FP16. So network-mode=1 comes
with a calib.table: only its existence matters to nvinfer, and TensorRT never reads its values for
a Q/DQ graph. It is written in the calibration-cache layout (a fixed TRT-8601 header, not matched
to the target's TensorRT) from the scales of the graph's own activation QuantizeLinear nodes, so
whatever might read it sees the graph's numbers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ModelError
from ...metadata import ModelMeta
from .fold import Normalisation

if TYPE_CHECKING:  # pragma: no cover
    import onnx

CONFIG_NAME = "config_infer_secondary_invedge.txt"
CALIB_NAME = "calib.table"
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}  # nvinfer's network-mode values
# The calibration-cache layout: a header line naming a TensorRT version and calibrator (fixed here:
# the values are never read for a Q/DQ graph), then "tensor: <float32 scale, big-endian hex>"
CALIB_HEADER = "TRT-8601-EntropyCalibration2"
SCALING_BILINEAR = 1  # scaling-filter: NvBufSurfTransformInter_Bilinear


@dataclass(frozen=True)
class Settings:
    """What `invedge deploy deepstream` takes besides the export: where nvinfer runs and on what."""

    precision: str | None = None  # None: the best the export has for TensorRT (int8 > fp16 > fp32)
    batch_size: int = 16
    gpu_id: int = 0
    gie_id: int = 2
    operate_on_gie_id: int | None = None
    operate_on_class_ids: tuple[int, ...] = ()
    dla_core: int | None = None  # a Jetson's DLA core (enable-dla, use-dla-core), GPU fallback for the rest


def engine_file(onnx_name: str, settings: Settings) -> str:
    """The engine nvinfer writes on its first run and reads afterwards: the model path with
    `_b<batch>_gpu<id>_<fp32|fp16|int8>.engine` (`_dla<core>_` on a DLA; nvdsinfer_model_builder.cpp),
    beside the ONNX file."""
    device = f"dla{settings.dla_core}" if settings.dla_core is not None else f"gpu{settings.gpu_id}"
    return f"{onnx_name}_b{settings.batch_size}_{device}_{settings.precision}.engine"


def config_text(meta: ModelMeta, norm: Normalisation, onnx_name: str, settings: Settings) -> str:
    """The [property] group of an nvinfer SGIE running `onnx_name` on each object of an upstream GIE,
    its output attached as tensor meta (network-type=100, output-tensor-meta=1, process-mode=2)."""
    size = meta.image_size
    lines = [
        f"# invedge: {meta.arch}, embedding space {meta.space_id}, {meta.embedding_dim}-d '{meta.output_name}'",
        "# written by 'invedge deploy deepstream'; paths are relative to this file",
        "# nvinfer feeds y = net-scale-factor * (x - offsets[c]) of RGB 0-255 pixels,",
        *_normalisation_comment(norm),
        "[property]",
        f"gpu-id={settings.gpu_id}",
        f"net-scale-factor={norm.net_scale_factor!r}",
        "offsets=" + ";".join(repr(o) for o in norm.offsets),
        "model-color-format=0",
        f"onnx-file={onnx_name}",
        f"model-engine-file={engine_file(onnx_name, settings)}",
        f"infer-dims=3;{size};{size}",
        f"batch-size={settings.batch_size}",
        f"network-mode={NETWORK_MODE[settings.precision]}",
    ]
    if settings.precision == "int8":
        lines.append(f"int8-calib-file={CALIB_NAME}")
    if settings.dla_core is not None:  # nvinfer builds DLA engines with a fixed batch (min = max)
        lines += ["enable-dla=1", f"use-dla-core={settings.dla_core}"]
    lines += [
        "network-type=100",
        "output-tensor-meta=1",
        "process-mode=2",
        f"gie-unique-id={settings.gie_id}",
    ]
    if settings.operate_on_gie_id is not None:
        lines.append(f"operate-on-gie-id={settings.operate_on_gie_id}")
    if settings.operate_on_class_ids:
        lines.append("operate-on-class-ids=" + ";".join(str(c) for c in settings.operate_on_class_ids))
    lines += [
        "# nvinfer scales the whole object box to the input size; ours resizes the shorter side and",
        "# crops the centre. 0 stretches the box; 1 (with symmetric-padding=1) letterboxes it instead",
        "maintain-aspect-ratio=0",
        f"scaling-filter={SCALING_BILINEAR}",
    ]
    return "\n".join(lines) + "\n"


def _normalisation_comment(norm: Normalisation) -> list[str]:
    """What y above is, and whether the ONNX graph does more (README.md says the same)."""
    if norm.channel_scale is None:
        return [
            "# which is all of (x/255 - mean[c]) / std (one std for the three channels): the ONNX graph is",
            "# the export's (see README.md)",
        ]
    return [
        "# which is x/255 - mean[c]; the stds differ per channel, so the ONNX graph first multiplies",
        "# channel c by 1/std[c] (see README.md)",
    ]


def calibration_cache(model: onnx.ModelProto, source: str) -> str:
    """The calib.table text (calibration-cache layout) from the activation scales of a Q/DQ graph's
    QuantizeLinear nodes (weights, which TensorRT quantizes itself, are left out)."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    scales: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in initializers:
            continue
        scale_init = initializers.get(node.input[1])
        if scale_init is None:
            continue
        scale = numpy_helper.to_array(scale_init)
        if scale.size != 1:
            continue  # per-channel activations do not occur in our graphs; TensorRT's cache has one scale
        scales[node.input[0]] = float(np.float32(scale.reshape(())))
    if not scales:
        raise ModelError(f"{source} has no activation QuantizeLinear nodes: it is not a Q/DQ INT8 graph")
    lines = [CALIB_HEADER] + [f"{name}: {struct.pack('>f', value).hex()}" for name, value in scales.items()]
    return "\n".join(lines) + "\n"


def parse_class_ids(text: str | None) -> tuple[int, ...]:
    """'0,2' → (0, 2): the detector classes the SGIE embeds (--operate-on-class-ids); ConfigError
    for anything but comma-separated whole numbers in range."""
    from ...bounds import DS_CLASS_ID
    from ...errors import ConfigError

    if text is None or not text.strip():
        return ()
    ids: list[int] = []
    for part in text.split(","):
        try:
            ids.append(int(part.strip()))
        except ValueError:
            raise ConfigError(
                f"--operate-on-class-ids {text!r} is not a list of class ids",
                "Use comma-separated numbers: 0,2",
            ) from None
    for class_id in ids:
        DS_CLASS_ID.check(class_id)
    return tuple(dict.fromkeys(ids))
