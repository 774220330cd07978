"""2 processes × B on gloo give the loss and embedding gradients of 1 process × 2B."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from invspread_edge import distributed
from invspread_edge.loss import InvariantSpreadLoss

B, D = 4, 16


def _embeddings():
    g = torch.Generator().manual_seed(0)
    return (
        F.normalize(torch.randn(2 * B, D, generator=g, dtype=torch.float64), dim=1),
        F.normalize(torch.randn(2 * B, D, generator=g, dtype=torch.float64), dim=1),
    )


def _worker(rank: int, world: int, init_file: str, out_file: str, detach_keys: bool) -> None:
    # a rendezvous file, not a TCP port: parallel test workers cannot collide; bounded if a rank dies
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=120)
    )
    try:
        z1, z2 = _embeddings()
        part = slice(rank * B, (rank + 1) * B)
        a = z1[part].clone().requires_grad_()
        b = z2[part].clone().requires_grad_()
        loss = InvariantSpreadLoss(0.1, detach_keys=detach_keys)(a, b)
        loss.backward()
        # DDP averages gradients over ranks: the effective gradient of each rank is grad / world.
        torch.save(
            {"loss": loss.detach(), "g1": a.grad / world, "g2": b.grad / world},
            f"{out_file}.{rank}",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("detach_keys", [True, False])
def test_two_ranks_equal_one_rank_with_twice_the_batch(tmp_path, detach_keys):
    world = 2
    out = tmp_path / "result"
    mp.start_processes(
        _worker,
        args=(world, str(tmp_path / "init"), str(out), detach_keys),
        nprocs=world,
        join=True,
        start_method="spawn",
    )
    results = [torch.load(f"{out}.{r}") for r in range(world)]

    z1, z2 = _embeddings()
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    single = InvariantSpreadLoss(0.1, detach_keys=detach_keys)(a, b)
    single.backward()

    mean_loss = sum(r["loss"] for r in results) / world
    assert torch.allclose(mean_loss, single.detach(), rtol=1e-10)
    assert not torch.allclose(results[0]["loss"], results[1]["loss"])  # each rank has its own rows
    for rank, r in enumerate(results):
        part = slice(rank * B, (rank + 1) * B)
        assert torch.allclose(r["g1"], a.grad[part], rtol=1e-8, atol=1e-12)
        assert torch.allclose(r["g2"], b.grad[part], rtol=1e-8, atol=1e-12)


def test_helpers_without_process_group():
    assert distributed.get_world_size() == 1
    assert distributed.get_rank() == 0
    assert distributed.is_main_process()
    x = torch.randn(3, 2)
    assert distributed.gather_with_grad(x) is x
    assert distributed.broadcast_flag(True) is True
    assert distributed.all_reduce_mean(2.5) == 2.5
    env = distributed.init_distributed("cpu")
    assert not env.enabled and env.rank == 0


@pytest.mark.parametrize(
    ("name", "value"), [("WORLD_SIZE", "abc"), ("WORLD_SIZE", "0"), ("RANK", "x"), ("LOCAL_RANK", "-1")]
)
def test_a_garbage_torchrun_variable_is_one_clear_error(monkeypatch, name, value):
    from invspread_edge.distributed import init_distributed
    from invspread_edge_runtime.errors import ConfigError

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        init_distributed("cpu")


def test_world_size_without_a_rendezvous_is_one_clear_error(monkeypatch):
    from invspread_edge.distributed import init_distributed
    from invspread_edge_runtime.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        init_distributed("cpu")
