"""What the runtime needs to know about a model, carried inside the ONNX file's metadata_props.

Preprocessing facts travel with the weights (timm's habit), so the runtime never guesses.
The ONNX file is read here with a minimal protobuf reader: neither `onnx` nor `onnxruntime` is
needed, so a Jetson with only TensorRT can still read a model's metadata.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ModelError

FORMAT = "invspread-edge/1"
# The graph `invedge deploy deepstream` writes: it takes nvinfer's raw pixels, so nothing of ours runs it.
DEEPSTREAM_FORMAT = FORMAT + "+deepstream"
PREFIX = "invedge."
PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu")
# The file names `invedge export` gives its artifacts, by precision.
ARTIFACT_FILES = {
    "fp32": "model.onnx",
    "fp16": "model.fp16.onnx",
    "int8": "model.int8.onnx",
    "int8-cpu": "model.int8-cpu.onnx",
}
RESIZE_POLICIES = ("shorter_side_center_crop",)
HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ModelMeta:
    """Preprocessing and identity of one exported encoder.

    `checkpoint_sha256` names the embedding space: every artifact exported from one checkpoint
    (fp32, fp16, int8) embeds into the same space, and galleries refuse queries from another.
    """

    arch: str
    image_size: int
    embedding_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    checkpoint_sha256: str
    toolkit_version: str
    precision: str = "fp32"
    channels: str = "RGB"
    resize: str = "shorter_side_center_crop"
    interpolation: str = "bilinear"
    input_name: str = "images"
    output_name: str = "embeddings"
    format: str = FORMAT
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def space_id(self) -> str:
        return f"{self.checkpoint_sha256[:16]}/{self.embedding_dim}"

    def to_props(self) -> dict[str, str]:
        """Flatten into ONNX metadata_props (string → string)."""
        props: dict[str, str] = {}
        for key, value in asdict(self).items():
            if key == "extra":
                continue
            props[PREFIX + key] = json.dumps(list(value)) if isinstance(value, tuple) else str(value)
        props.update({PREFIX + "extra." + k: v for k, v in self.extra.items()})
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMeta:
        ours = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        if ours.get("format") == DEEPSTREAM_FORMAT:
            raise ModelError(
                f"{source} is the DeepStream variant of a model (it takes net-scale-factor × (x − offsets) "
                "of 0-255 pixels, as nvinfer feeds it, not invedge's normalised input)",
                "Run the export folder it was written from instead",
            )
        if ours.get("format") != FORMAT:
            raise ModelError(
                f"{source} is not an invspread-edge model (no '{PREFIX}format={FORMAT}' metadata)",
                "Export it with 'invedge export RUN_DIR'",
            )
        kwargs: dict[str, object] = {}
        try:
            for f in fields(cls):
                if f.name == "extra" or f.name not in ours:
                    continue
                raw = ours[f.name]
                if f.name in ("mean", "std"):
                    kwargs[f.name] = tuple(float(v) for v in json.loads(raw))
                elif f.name in ("image_size", "embedding_dim"):
                    kwargs[f.name] = int(raw)
                else:
                    kwargs[f.name] = raw
            kwargs["extra"] = {k[len("extra.") :]: v for k, v in ours.items() if k.startswith("extra.")}
            meta = cls(**kwargs)  # type: ignore[arg-type]
        except (TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ModelError(
                f"{source} has damaged invspread-edge metadata: {exc}",
                "Export it again with 'invedge export RUN_DIR --overwrite'",
            ) from exc
        meta.validate(source)
        return meta

    def validate(self, source: str = "model") -> None:
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} (allowed: {', '.join(PRECISIONS)})")
        if self.resize not in RESIZE_POLICIES:
            problems.append(f"resize policy {self.resize!r}")
        if self.channels != "RGB":
            problems.append(f"channel order {self.channels!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean/std")
        if self.image_size <= 0 or self.embedding_dim <= 0:
            problems.append("image_size/embedding_dim")
        if not is_sha256(self.checkpoint_sha256):  # names the space: in answers, headers and galleries
            problems.append(f"checkpoint_sha256 {self.checkpoint_sha256[:80]!r} (not 64 hex digits)")
        if problems:
            raise ModelError(
                f"{source} has unsupported metadata: {'; '.join(problems)}",
                "Export it again with 'invedge export RUN_DIR --overwrite' (this toolkit's version)",
            )


def is_sha256(text: str) -> bool:
    """Whether `text` is a sha256 as hexdigest() writes it (64 lowercase hex digits)."""
    return len(text) == 64 and all(c in HEX_DIGITS for c in text)


def read_onnx_props(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the metadata_props of an ONNX file without importing onnx."""
    path = Path(path)
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _metadata_props(buf)
    except FileNotFoundError as exc:
        raise ModelError(
            f"model file not found: {path}", "Pass an exported .onnx file or an export folder"
        ) from exc
    except IsADirectoryError as exc:
        raise ModelError(
            f"{path} is a folder, not an ONNX file", "Pass the folder itself, or one .onnx file in it"
        ) from exc
    except (ValueError, IndexError, OSError) as exc:  # empty file, bad varint, short read
        raise ModelError(
            f"{path} is not a readable ONNX file ({exc})",
            "It is damaged or not a model: export it again with 'invedge export RUN_DIR --overwrite'",
        ) from exc


def read_model_meta(path: str | os.PathLike[str]) -> ModelMeta:
    return ModelMeta.from_props(read_onnx_props(path), source=str(path))


def replace_props(proto: Any, props: dict[str, str]) -> None:
    """Put `props` as our metadata_props of an onnx.ModelProto: every `invedge.` entry it held goes,
    other producers' entries stay (in their order, before ours). Duck-typed: onnx is not imported."""
    keep = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for key, value in [*keep, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


# --- minimal protobuf wire-format reader (ModelProto.metadata_props = field 14) -------------------

_METADATA_PROPS = 14


def _varint(buf: bytes | mmap.mmap, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _fields(buf: bytes | mmap.mmap, start: int, end: int):
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            yield number, None
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            yield number, (pos, pos + length)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("truncated message")


def _metadata_props(buf: bytes | mmap.mmap) -> dict[str, str]:
    props: dict[str, str] = {}
    for number, span in _fields(buf, 0, len(buf)):
        if number != _METADATA_PROPS or span is None:
            continue
        key = value = ""
        for sub, sub_span in _fields(buf, *span):
            if sub_span is None:
                continue
            text = bytes(buf[sub_span[0] : sub_span[1]]).decode("utf-8")
            if sub == 1:
                key = text
            elif sub == 2:
                value = text
        props[key] = value
    return props
