"""nvinfer's normalisation, and the ONNX graph that takes over what nvinfer cannot express.

nvinfer feeds the network y = net-scale-factor × (x − offsets[c]) of 0–255 pixels: one scalar scale
and a per-channel offset. Ours is (x / 255 − mean[c]) / std[c]. The offsets take the mean exactly
(255 × mean[c]); the scale takes 1 / (255 × std) when the three stds are equal, else 1 / 255 and the
per-channel 1 / std[c] goes into the graph: a Mul by a [1, 3, 1, 1] constant between the graph input
and every node that read it.

Why a Mul in front rather than folding 1 / std into the first Conv's weights: it is one rule for all
three artifacts. In the FP16 graph the input's first reader is the Cast to FP16, so the Mul runs in
FP32 before it (the normalisation stays FP32, as fp16.py keeps it). In the INT8 Q/DQ graph the
input's first reader is the QuantizeLinear, so the Mul comes before it and the quantizer sees the
very values its scale was calibrated on; folding into Conv weights would instead change weights that
are quantized per output channel (and stored as FP16 in the FP16 graph), so it would not be exact.
(Whether TensorRT then fuses the Mul into the next layer has not been checked: it costs one
elementwise pass over the input at worst.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import MissingDependency, ModelError
from ...evaluation.accuracy import cosine_stats
from ...metadata import DEEPSTREAM_FORMAT, PREFIX, ModelMeta, replace_props

if TYPE_CHECKING:  # pragma: no cover
    import onnx

SCALE_NAME = "invedge_deepstream_channel_scale"  # the [1, 3, 1, 1] constant the folded graph multiplies by
MARK = PREFIX + "deepstream."  # metadata keys of the variant (and invedge.format = DEEPSTREAM_FORMAT)


@dataclass(frozen=True)
class Normalisation:
    """What nvinfer's config says and what the graph must still do."""

    net_scale_factor: float
    offsets: tuple[float, float, float]
    channel_scale: tuple[float, float, float] | None  # None: nvinfer expresses all of it

    def nvinfer(self, pixels: np.ndarray) -> np.ndarray:
        """nvinfer's preprocessing in numpy, float32: (N, 3, H, W) 0–255 → net-scale-factor × (x − offsets)."""
        offsets = np.asarray(self.offsets, dtype=np.float32).reshape(1, 3, 1, 1)
        return np.float32(self.net_scale_factor) * (pixels.astype(np.float32) - offsets)


def normalisation_for(meta: ModelMeta) -> Normalisation:
    """The net-scale-factor and offsets that express `meta`'s normalisation, and the per-channel rest."""
    offsets = tuple(float(np.float32(255.0) * np.float32(m)) for m in meta.mean)
    if len(set(meta.std)) == 1:
        return Normalisation(1.0 / (255.0 * meta.std[0]), offsets, None)  # type: ignore[arg-type]
    return Normalisation(1.0 / 255.0, offsets, tuple(1.0 / s for s in meta.std))  # type: ignore[arg-type]


def import_onnx() -> Any:
    """The onnx module, or MissingDependency naming the install (the runtime does not require onnx)."""
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependency("onnx", "Writing the DeepStream graph", "pip install onnx") from exc
    return onnx


def fold(model: onnx.ModelProto, meta: ModelMeta, norm: Normalisation, source: str) -> onnx.ModelProto:
    """A copy of `model` that takes nvinfer's output (raw pixels after its scale and offsets), with
    its metadata kept and marked as the DeepStream variant (our runtime refuses to run it)."""
    onnx = import_onnx()
    from onnx import helper, numpy_helper

    folded = copy.deepcopy(model)
    graph = folded.graph
    if [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}] != [
        meta.input_name
    ]:
        raise ModelError(f"{source} does not have the one input {meta.input_name!r} its metadata names")
    if norm.channel_scale is not None:
        scaled = f"{meta.input_name}_channel_scaled"
        for node in graph.node:
            node.input[:] = [scaled if name == meta.input_name else name for name in node.input]
        scale = np.asarray(norm.channel_scale, dtype=np.float32).reshape(1, 3, 1, 1)
        graph.initializer.append(numpy_helper.from_array(scale, SCALE_NAME))
        mul = helper.make_node(
            "Mul", [meta.input_name, SCALE_NAME], [scaled], name="invedge_deepstream_scale"
        )
        graph.node.insert(0, mul)
    ours = {p.key: p.value for p in folded.metadata_props if p.key.startswith(PREFIX)}
    replace_props(folded, {**ours, **variant_props(norm, source)})
    onnx.checker.check_model(folded)
    return folded


def variant_props(norm: Normalisation, source: str) -> dict[str, str]:
    """The keys that mark the variant: the format (so our runtime refuses it) and what was folded."""
    return {
        PREFIX + "format": DEEPSTREAM_FORMAT,
        MARK + "source": source,
        MARK + "net_scale_factor": repr(norm.net_scale_factor),
        MARK + "offsets": ";".join(repr(o) for o in norm.offsets),
        MARK + "channel_scale": "" if norm.channel_scale is None else ";".join(map(repr, norm.channel_scale)),
    }


# --- the check --------------------------------------------------------------------------------------

# The least cosine between the folded graph fed nvinfer's preprocessing and the original fed ours:
# the 0.99999 at every precision. The two sides differ only in how the FP32 input is
# rounded (255·mean offsets and a separate scale against one (x/255 − mean)/std), a last-bit
# difference; the FP16 Cast and the INT8 QuantizeLinear then see inputs that agree to ~1e-7, so a
# rounding flip there is rare and moves one element by one FP16 ulp or one quantization step.
# Measured on the test exports: 1 − 3e-14 or closer at fp32, fp16 and int8 alike.
MIN_COSINE = {"fp32": 0.99999, "fp16": 0.99999, "int8": 0.99999}


@dataclass(frozen=True)
class FoldCheck:
    precision: str
    images: int
    min_cosine: float
    mean_cosine: float
    bound: float

    def summary(self) -> str:
        """The measured figure and the bound it had to meet, e.g. "least cosine 1 - 1.0e-12 over
        48 images (required: ≥ 0.99999)" (six decimals would round a near miss of 1 up to 1.000000)."""
        return f"least cosine {cosine_text(self.min_cosine)} over {self.images} images (required: ≥ {self.bound})"

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "images": self.images,
            "min_cosine": self.min_cosine,
            "mean_cosine": self.mean_cosine,
            "bound": self.bound,
        }


def cosine_text(cosine: float) -> str:
    """A cosine near 1 as its distance from 1 ("1 - 1.0e-12"), so no rounding hides the difference."""
    gap = 1.0 - cosine
    if gap == 0.0:
        return "1"
    if abs(gap) < 1e-4:
        return f"1 {'-' if gap > 0 else '+'} {abs(gap):.1e}"
    return f"{cosine:.6f}"


def check_fold(
    original: bytes, folded: bytes, meta: ModelMeta, norm: Normalisation, pixels: np.ndarray, precision: str
) -> FoldCheck:
    """Run both graphs on ONNX Runtime's CPU provider over the same (N, 3, S, S) uint8 pixels: the
    original on our normalisation, the folded one on nvinfer's; ModelError when they differ past
    MIN_COSINE[precision]."""
    from ...backends.ort import import_ort  # onnxruntime, imported where it is needed
    from ...preprocess import normalize

    ort = import_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ours = ort.InferenceSession(original, options, providers=["CPUExecutionProvider"])
    theirs = ort.InferenceSession(folded, options, providers=["CPUExecutionProvider"])
    a = ours.run(None, {meta.input_name: normalize(pixels, meta.mean, meta.std)})[0]
    b = theirs.run(None, {meta.input_name: norm.nvinfer(pixels)})[0]
    mean_cosine, min_cosine = cosine_stats(a, b)
    bound = MIN_COSINE[precision]
    result = FoldCheck(precision, len(pixels), min_cosine, mean_cosine, bound)
    if not result.min_cosine >= bound:  # NaN fails too
        raise ModelError(
            f"the DeepStream graph ({precision}) does not give the model's embeddings: {result.summary()}; "
            "nothing was written",
            "This is a bug: report it with the export folder",
        )
    return result


def check_pixels(size: int, probes: np.ndarray | None, count: int = 16, seed: int = 0) -> np.ndarray:
    """The check's raw pixels: the export's probe images when there are any, and seeded colour
    images whose channels differ (noise around a different level per channel), so a channel taken
    for another cannot pass."""
    rng = np.random.default_rng(seed)
    levels = np.asarray([60, 130, 200], dtype=np.float64).reshape(1, 3, 1, 1)
    noise = rng.normal(0.0, 50.0, size=(count, 3, size, size))
    colour = np.clip(np.rint(levels[:, rng.permutation(3)] + noise), 0, 255).astype(np.uint8)
    return colour if probes is None or not len(probes) else np.concatenate([probes, colour])
