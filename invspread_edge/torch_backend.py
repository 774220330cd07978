"""PyTorch runtimes for `invedge bench`: the checkpoint's own model, eager or `torch.compile`d.

The runtime package never imports torch, so its benchmark learns about these runtimes from
`register_torch_runtimes()`, the toolkit's "invedge.runtimes" entry point. Importing
this module imports no torch either: `TorchBackend` does when it is opened.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from invspread_edge_runtime.backends.base import Backend, BackendInfo
from invspread_edge_runtime.bench.registry import NotPresent, OpenOptions, register_runtime
from invspread_edge_runtime.bench.target import BenchTarget
from invspread_edge_runtime.files import sha256_file
from invspread_edge_runtime.metadata import ModelMeta

PRECISIONS = ("fp32", "bf16", "fp16")  # fp16 on CUDA only; bf16 with autocast on CPU and CUDA


class TorchBackend(Backend):
    """(N, 3, H, W) float32 → (N, d) float32 with the checkpoint's encoder in PyTorch.

    `precision`: fp32, or bf16/fp16 under autocast (the L2 normalisation stays in fp32, as in
    the FP16 export). On CUDA, `last_device_ms()` is the model's time between two CUDA events.
    `meta`: the export's metadata of this checkpoint (the bench target's); default: made from the
    checkpoint's config as the export makes it.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        precision: str = "fp32",
        *,
        compile: bool = False,
        threads: int = 0,
        device: str | None = None,
        meta: ModelMeta | None = None,
    ) -> None:
        import torch

        from invspread_edge_export.meta import meta_from_config

        from .checkpoint import build_model, load_checkpoint

        if precision not in PRECISIONS:
            raise NotPresent(f"torch runs {', '.join(PRECISIONS)}, not {precision}")
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "fp16" and self.device.type != "cuda":
            raise NotPresent("fp16 in PyTorch needs a CUDA GPU (bf16 runs on the CPU)")
        ckpt = load_checkpoint(checkpoint)
        self.meta = meta or meta_from_config(ckpt.config, ckpt.sha256)
        model = build_model(ckpt).to(self.device)
        self.model_size_bytes = sum(t.numel() * t.element_size() for t in ckpt.model_state.values())
        self.model: Any = torch.compile(model) if compile else model
        self._autocast = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self._cuda = self.device.type == "cuda"
        self._events: tuple[Any, Any] | None = None
        name = torch.cuda.get_device_name(self.device) if self._cuda else "cpu"
        self.info = BackendInfo(
            name="torch-compile" if compile else "torch",
            device=f"{self.device} ({name})" if self._cuda else "cpu",
            precision=precision,
            model_path=str(ckpt.path),
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type, dtype=self._autocast or torch.float32, enabled=self._autocast is not None
            ),
        ):
            if self._cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                y = self.model(x)
                end.record()
                self._events = (start, end)
            else:
                y = self.model(x)
        return y.float().cpu().numpy()

    def synchronize(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def last_device_ms(self) -> float | None:
        if self._events is None:
            return None
        start, end = self._events
        end.synchronize()
        return float(start.elapsed_time(end))

    def close(self) -> None:
        self.model = None
        self._events = None


# --- registration with the benchmark ----------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _checkpoint_sha(path: str, mtime_ns: int) -> str:
    return sha256_file(path)


def torch_unavailable(target: BenchTarget) -> str | None:
    """Why the torch runtimes cannot run on `target` (None: they can)."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (the runtime-only install has no torch)"
    if target.checkpoint is None:
        return f"needs a run folder with its checkpoint.safetensors; {target.source} is an {target.kind}"
    import torch  # noqa: F401  (imported here, so no row's cold start counts the import, as for onnxruntime)

    path = Path(target.checkpoint)
    sha = _checkpoint_sha(str(path), path.stat().st_mtime_ns)
    if sha != target.meta.checkpoint_sha256:
        return (
            "the checkpoint changed since the export (sha256 differs), so torch and ONNX rows would not "
            f"embed into the same space; re-export with 'invedge export {target.run_dir}'"
        )
    return None


def _opener(compile: bool):
    def open_torch(target: BenchTarget, precision: str, options: OpenOptions) -> Backend:
        if target.checkpoint is None:
            raise NotPresent(torch_unavailable(target) or "no checkpoint")
        return TorchBackend(
            target.checkpoint, precision, compile=compile, threads=options.threads, meta=target.meta
        )

    return open_torch


def register_torch_runtimes() -> None:
    """Make `invedge bench` offer 'torch' (eager fp32/bf16) and 'torch-compile' (fp32)."""
    register_runtime(
        "torch",
        _opener(compile=False),
        precisions=PRECISIONS,
        defaults=("fp32", "bf16"),
        probe=torch_unavailable,
        description="PyTorch eager, the checkpoint's model",
    )
    register_runtime(
        "torch-compile",
        _opener(compile=True),
        precisions=PRECISIONS,
        defaults=("fp32",),
        probe=torch_unavailable,
        description="torch.compile (inductor) of the checkpoint's model",
    )
