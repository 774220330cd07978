"""`invedge train --init`: start from existing weights instead of random ones.

Three sources, detected in this order:
1. one of our runs (a run folder or its checkpoint.safetensors): head and backbone, keys already ours;
   its optimizer state is ignored (the new run starts a fresh optimizer);
2. any other `.safetensors` file: a torchvision/timm-style state dict;
3. a `.pth` / `.pt` / `.bin` file that `torch.load(..., weights_only=True)` reads (never an
   arbitrary pickle), optionally wrapped as trainers save it ({"state_dict": ...}, {"model": ...}).

Foreign names are mapped onto ours by `map_keys` (a small table per model family); an ImageNet
classifier (`fc.*`) is reported, never loaded into our embedding head. Nothing is copied unless every
shared tensor has the model's shape.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invspread_edge_export.parity import require_finite_tensors
from invspread_edge_runtime.errors import CheckpointError
from invspread_edge_runtime.files import sha256_file

from .checkpoint import CHECKPOINT_NAME, FORMAT, check_model_config, load_checkpoint
from .model import ARCHS, CifarResNet, TorchvisionResNet

ACCEPTED = "a run folder of 'invedge train', a .safetensors state dict, or a weights-only .pth/.pt/.bin"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# Trainers' layouts that hold the state dict one level down, tried in this order.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
# Prefixes a wrapper adds to our own names: DDP and torch.compile.
OWN_PREFIXES = ("module.", "_orig_mod.")
# Prefixes of foreign state dicts (DDP, Lightning's `model.`, SSL libraries' `backbone.`/`encoder.`).
FOREIGN_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.")
CLASSIFIER_PREFIX = "fc."  # torchvision's and timm's ImageNet classifier


@dataclass(frozen=True)
class ForeignNames:
    """How a torchvision/timm ResNet's names become ours for one model family."""

    add_prefix: str  # where the torchvision network sits in our model
    renames: tuple[tuple[str, str], ...]  # substring replacements, applied in order


FOREIGN_NAMES: dict[type, ForeignNames] = {
    TorchvisionResNet: ForeignNames(add_prefix="backbone.", renames=()),
    CifarResNet: ForeignNames(add_prefix="", renames=((".downsample.", ".shortcut."),)),
}

SUMMARY_NAMES = 6  # names listed per part of the one-line summary


@dataclass
class InitReport:
    """What `load_init` copied: recorded in run.json under "init" and printed as one line."""

    source: str  # the path as given, made absolute
    kind: str  # "run" | "safetensors" | "pth"
    sha256: str  # of the file read
    loaded: int  # tensors copied into the model
    missing: list[str]  # model keys the file did not provide (after mapping): freshly initialised
    unexpected: list[str]  # file keys that map to nothing in the model (e.g. a classifier fc.*)
    arch: dict | None  # for kind "run": {"arch","width","embedding_dim"} of that run, else None

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors from {self.source}"]
        if self.missing:
            parts.append(f"new: {_names(self.missing)}")
        if self.unexpected:
            parts.append(f"ignored: {_names(self.unexpected)} (file)")
        return "; ".join(parts)


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:SUMMARY_NAMES])
    return shown + (f" (+{len(keys) - SUMMARY_NAMES} more)" if len(keys) > SUMMARY_NAMES else "")


# --- detection ----------------------------------------------------------------------------------


def _detect(source: str) -> tuple[str, Path]:
    """(kind, file to read) of a --init source, or a one-line error naming the accepted kinds."""
    path = Path(source).expanduser().absolute()
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise CheckpointError(
                f"{path} is a folder without {CHECKPOINT_NAME}",
                f"--init takes {ACCEPTED}",
            )
        return "run", path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}", f"--init takes {ACCEPTED}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"cannot read {path}: permission denied", "Make it readable (chmod u+r)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return ("run" if _safetensors_metadata(path).get("format") == FORMAT else "safetensors"), path
    if suffix in TORCH_SUFFIXES:
        return "pth", path
    raise CheckpointError(
        f"{path} is not a weights file (suffix {path.suffix or 'none'!r})", f"--init takes {ACCEPTED}"
    )


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The header's metadata only (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(
            f"{path} is damaged or not a safetensors file ({exc.__class__.__name__})",
            "Pass an intact .safetensors file",
        ) from exc


def init_architecture(source: str) -> dict | None:
    """For our run folder / checkpoint: {"arch","width","embedding_dim"} stored in it (so the CLI can
    default --arch/--width/--embedding-dim to the run's); None for foreign state dicts. Cheap: reads
    only the checkpoint metadata, no tensors."""
    kind, path = _detect(source)
    if kind != "run":
        return None
    metadata = _safetensors_metadata(path)

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"{path} carries our format tag but its {what}",
            "Use an intact checkpoint written by 'invedge train'",
        )

    try:
        state = json.loads(metadata.get("state", ""))
    except ValueError as exc:
        raise bad("state is not JSON") from exc
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict):
        raise bad("config is missing or not an object")
    check_model_config(config, bad)
    return _run_arch(config)


def _run_arch(config: Mapping[str, Any]) -> dict:
    return {
        "arch": config["arch"],
        "width": config.get("width", 64),
        "embedding_dim": config["embedding_dim"],
    }


# --- reading ------------------------------------------------------------------------------------


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A weights-only `torch.load`, unwrapped to a flat {name: tensor}."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"{path} is not a weights-only state dict (it needs arbitrary pickle, which invedge "
                "never loads)",
                "Re-save it from Python with torch.save(model.state_dict(), PATH), or as safetensors "
                "(safetensors.torch.save_file(model.state_dict(), PATH))",
            ) from exc
        raise CheckpointError(
            f"{path} is not a PyTorch file torch.load can read ({exc.__class__.__name__})",
            "Pass a state dict saved with torch.save(model.state_dict(), PATH), or a .safetensors file",
        ) from exc
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: Any, path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict inside a trainer's checkpoint ({"state_dict": ...}, {"model": ...}, ...)."""
    for _ in range(len(WRAPPER_KEYS) + 1):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            odd = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
            what = f"a non-tensor value under {odd!r}" if odd is not None else "no tensors"
            raise CheckpointError(
                f"{path} holds {what}, not a state dict",
                f"Save only the weights (torch.save(model.state_dict(), PATH)); a wrapper may hold "
                f"them under one of {', '.join(WRAPPER_KEYS)}",
            )
        obj = inner
    raise CheckpointError(
        f"{path} holds a {type(obj).__name__}, not a state dict",
        "Save only the weights: torch.save(model.state_dict(), PATH)",
    )


# --- mapping ------------------------------------------------------------------------------------


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    """Remove any of `prefixes` from the front of `key`, repeatedly (e.g. "module.model.")."""
    while True:
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        else:
            return key


def own_name(key: str) -> str:
    """A key saved from our model, possibly through DDP or torch.compile."""
    return _strip(key, OWN_PREFIXES)


def foreign_name(key: str, arch: str) -> str | None:
    """A torchvision/timm ResNet key as our `arch` names it; None for the ImageNet classifier."""
    names = FOREIGN_NAMES[ARCHS[arch].builder]
    key = _strip(key, FOREIGN_PREFIXES)
    if key.startswith(CLASSIFIER_PREFIX):
        return None
    for old, new in names.renames:
        key = key.replace(old, new)
    return names.add_prefix + key


def map_keys(file_keys: Iterable[str], model_keys: Iterable[str], arch: str) -> dict[str, str]:
    """{file key: model key} under whichever reading matches more of the model: our own names
    (a file saved from our model; its fc.* is our head) or torchvision's (its fc.* is a classifier).
    Own names win a tie. Keys absent from the result are the file's unexpected ones."""
    file_keys, wanted = list(file_keys), set(model_keys)
    own = {k: own_name(k) for k in file_keys}
    foreign = {k: foreign_name(k, arch) for k in file_keys}
    own = {k: v for k, v in own.items() if v in wanted}
    foreign = {k: v for k, v in foreign.items() if v is not None and v in wanted}
    return own if len(set(own.values())) >= len(set(foreign.values())) else foreign


# --- loading ------------------------------------------------------------------------------------


def load_init(source: str, model: nn.Module, arch: str) -> InitReport:
    """Copy weights from `source` into `model` (built by create_model(arch, ...)), in place."""
    kind, path = _detect(source)
    run_arch = None
    if kind == "run":
        ckpt = load_checkpoint(path)
        tensors, digest, run_arch = ckpt.model_state, ckpt.sha256, _run_arch(ckpt.config)
    elif kind == "safetensors":
        tensors, digest = _read_safetensors(path), sha256_file(path)
    else:
        tensors, digest = _read_torch(path), sha256_file(path)

    target = model.state_dict()
    if run_arch is not None and run_arch["arch"] != arch:
        raise CheckpointError(f"{path} is a {run_arch['arch']} run, not {arch}", _arch_hint(run_arch))
    # A run's keys are ours already: reading them as torchvision's could only mis-map the head.
    mapping = {k: k for k in tensors if k in target} if kind == "run" else map_keys(tensors, target, arch)
    _check_mapping(path, tensors, target, mapping, arch, run_arch)
    state = {mk: tensors[fk].to(dtype=target[mk].dtype) for fk, mk in mapping.items()}
    require_finite_tensors(
        {fk: tensors[fk] for fk in mapping}, str(path), hint="Pass weights whose values are all finite"
    )
    model.load_state_dict(state, strict=False)
    return InitReport(
        source=str(Path(source).expanduser().absolute()),
        kind=kind,
        sha256=digest,
        loaded=len(state),
        missing=[k for k in target if k not in state],
        unexpected=[k for k in tensors if k not in mapping],
        arch=run_arch,
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(
            f"{path} is damaged or not a safetensors file ({exc.__class__.__name__})",
            "Pass an intact .safetensors file",
        ) from exc


def _check_mapping(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    mapping: Mapping[str, str],
    arch: str,
    run_arch: dict | None,
) -> None:
    """One-line errors: nothing matched, two file keys for one model key, or any shape differs."""
    if not mapping:
        first = ", ".join(list(tensors)[:4]) or "none"
        raise CheckpointError(
            f"no tensor of {path} matches {arch}'s names (its first keys: {first})",
            _arch_hint(run_arch),
        )
    seen: dict[str, str] = {}
    for fk, mk in mapping.items():
        if mk in seen:
            raise CheckpointError(
                f"{path}: {seen[mk]} and {fk} both map to {arch}'s {mk}",
                "Save only the one encoder's state dict (torch.save(encoder.state_dict(), PATH))",
            )
        seen[mk] = fk
    order = {mk: i for i, mk in enumerate(target)}  # name the model's first differing tensor
    pairs = sorted(mapping.items(), key=lambda pair: order[pair[1]])
    differ = [(fk, mk) for fk, mk in pairs if tensors[fk].shape != target[mk].shape]
    if differ:
        fk, mk = differ[0]
        name = fk if fk == mk else f"{fk} (our {mk})"
        raise CheckpointError(
            f"{path}: {name} is {tuple(tensors[fk].shape)} there but {tuple(target[mk].shape)} in {arch} "
            f"({len(differ)} {'tensors differ' if len(differ) > 1 else 'tensor differs'})",
            _arch_hint(run_arch),
        )


def _arch_hint(run_arch: dict | None) -> str:
    if run_arch:
        return (
            f"Train with the run's architecture (--arch {run_arch['arch']} --width {run_arch['width']} "
            f"--embedding-dim {run_arch['embedding_dim']})"
        )
    tv = [name for name, cfg in ARCHS.items() if cfg.builder is TorchvisionResNet]
    return (
        f"Use the architecture the weights were saved from (torchvision/timm ResNets: --arch {', '.join(tv)})"
    )
