"""torch.distributed helpers that answer sensibly when not distributed (world size 1, rank 0).

Settings come from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK), as in
torchvision's references; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from invspread_edge_runtime.errors import ConfigError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return get_rank() == 0


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_int(name: str, default: int) -> int:
    """RANK, WORLD_SIZE or LOCAL_RANK from the environment; ConfigError for a value torchrun would
    never set (the CLI shows it as one line, never a ValueError's traceback)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < (1 if name == "WORLD_SIZE" else 0):
        raise ConfigError(
            f"the environment variable {name}={raw!r} is not a valid {name.lower().replace('_', ' ')}",
            "torchrun sets it: launch with torchrun, or unset it for a single-process run",
        )
    return value


def init_distributed(device_type: str) -> DistEnv:
    """Join the process group torchrun describes in the environment; a plain run stays single."""
    world = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    local_rank = env_int("LOCAL_RANK", 0)
    if world > 1 and not is_distributed():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
        except ValueError as exc:  # torch's env:// rendezvous: MASTER_ADDR / MASTER_PORT missing or bad
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(
                f"WORLD_SIZE={world} asks for a distributed run, but it cannot start ({first[:200]})",
                "Launch with torchrun (it sets MASTER_ADDR, MASTER_PORT, RANK), or unset WORLD_SIZE",
            ) from exc
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank)


def cleanup_distributed() -> None:
    """Tear the group down together: rank 0 writes the last files while the others are done, and a
    gloo rank whose peer has already closed its pairs can abort (SIGABRT) instead of exiting."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_flag(flag: bool) -> bool:
    """True on every rank when any rank says True (e.g. Ctrl-C seen by one of them)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_reduce_mean(value: float) -> float:
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / get_world_size()


def all_reduce_min_int(value: int) -> int:
    """The smallest value over ranks (e.g. a batch size after dropping unreadable files)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def all_reduce_sum_int(value: int) -> int:
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return int(t.item())


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient and returns the local slice.

    Each rank's loss may depend on every rank's rows; summing the gradients delivers to each
    rank the full derivative of Σ_ranks loss with respect to its own rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(b, d) on each rank → (b · world_size, d) in rank order, gradient flowing to the local rows."""
    if not is_distributed() or get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)
