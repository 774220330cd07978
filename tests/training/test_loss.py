"""The stable loss against a slow, literal reading of Eq. 3–7 of Ye et al. (2019)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from invspread_edge.loss import InvariantSpreadLoss, naive_invariant_spread_loss, non_negatives
from invspread_edge_runtime.errors import ConfigError


def literal_loss(z1, z2, temperature=0.1, m=1.0, detach_keys=True):
    """Eq. 3–7 element by element, in float64, as the authors' BatchCriterion computes them."""
    x = torch.cat([z1, z2]).double()
    keys = x.detach() if detach_keys else x
    n2, b = x.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n2):
        p = (i + b) % n2
        e = [torch.exp(x[i] @ keys[j] / temperature) for j in range(n2)]
        d = e[p] + m * sum(e[j] for j in range(n2) if j not in (i, p))
        total = total + torch.log(e[p] / d)
        for j in range(n2):
            if j not in (i, p):
                total = total + m * torch.log(1 - e[j] / d)
    return -total / n2


def unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


@pytest.mark.parametrize("b", [2, 3, 8])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5])
@pytest.mark.parametrize("m", [1.0, 2.0])
def test_matches_literal_equations(b, temperature, m):
    z1, z2 = unit(b, 16, seed=b), unit(b, 16, seed=100 + b)
    got = InvariantSpreadLoss(temperature, m)(z1, z2)
    want = literal_loss(z1, z2, temperature, m)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6), (got, want)


@pytest.mark.parametrize("detach_keys", [True, False])
def test_gradient_matches_literal(detach_keys):
    z1 = unit(6, 8, seed=1).requires_grad_()
    z2 = unit(6, 8, seed=2).requires_grad_()
    InvariantSpreadLoss(0.1, detach_keys=detach_keys)(z1, z2).backward()
    got = torch.cat([z1.grad, z2.grad])
    a1, a2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
    literal_loss(a1, a2, 0.1, detach_keys=detach_keys).backward()
    want = torch.cat([a1.grad, a2.grad])
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-6)
    if detach_keys:  # with detached keys only the rows carry gradient: it differs from the full one
        b1, b2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
        literal_loss(b1, b2, 0.1, detach_keys=False).backward()
        assert not torch.allclose(got.double(), torch.cat([b1.grad, b2.grad]), atol=1e-4)


@pytest.mark.parametrize("m", [1.0, 1.5])
def test_gradcheck_float64(m):
    """Full gradient (keys not detached) against finite differences."""
    loss_fn = InvariantSpreadLoss(0.1, m, detach_keys=False)
    z1 = (unit(4, 5, seed=3) * 0.9).requires_grad_()  # off the unit sphere: generic points
    z2 = (unit(4, 5, seed=4) * 1.1).requires_grad_()
    assert torch.autograd.gradcheck(loss_fn, (z1, z2), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("m", [1.0, 1.5])
def test_gradcheck_rows_with_keys_held_fixed(m):
    """Detached keys: the gradient is the derivative with respect to the rows, keys held constant."""
    loss_fn = InvariantSpreadLoss(0.1, m)
    keys = unit(8, 5, seed=5)
    index = torch.arange(8)
    pos = torch.cat([index[4:], index[:4]])
    rows = (keys * 0.95).clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda r: loss_fn._per_row(r, keys, pos, non_negatives(index, pos, 8)).mean(),
        (rows,),
        eps=1e-6,
        atol=1e-5,
    )


@pytest.mark.parametrize("m", [1.0, 2.0])
def test_tied_top_negatives(m):
    """Duplicate images make the most similar negatives exact ties: value and gradient still match."""
    z1, z2 = unit(5, 8, seed=7), unit(5, 8, seed=8)
    z1[3], z1[4], z2[3], z2[4] = z1[1], z1[1], z2[1], z2[1]  # images 3 and 4 are image 1
    s = torch.cat([z1, z2]) @ torch.cat([z1, z2]).T
    assert s[1, 3] == s[1, 4] == s[1].max()  # row 1's two most similar negatives tie exactly
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    got = InvariantSpreadLoss(0.1, m, detach_keys=False)(a1, a2)
    got.backward()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    want = literal_loss(b1, b2, 0.1, m, detach_keys=False)
    want.backward()
    assert torch.allclose(got, want, rtol=1e-10)
    assert torch.allclose(torch.cat([a1.grad, a2.grad]), torch.cat([b1.grad, b2.grad]), rtol=1e-8, atol=1e-10)


def test_naive_reference_matches_literal():
    z1, z2 = unit(5, 8, seed=5), unit(5, 8, seed=6)
    assert torch.allclose(naive_invariant_spread_loss(z1, z2, 0.1, 2.0), literal_loss(z1, z2, 0.1, 2.0))


def _finite_with_grads(z1, z2, **kwargs):
    z1, z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = InvariantSpreadLoss(**kwargs)(z1, z2)
    loss.backward()
    return (
        bool(torch.isfinite(loss))
        and bool(torch.isfinite(z1.grad).all())
        and bool(torch.isfinite(z2.grad).all())
    ), loss


def test_identical_views_at_small_temperature():
    z = unit(16, 32, seed=7, dtype=torch.float32)
    ok, loss = _finite_with_grads(z, z, temperature=0.05)
    assert ok and loss > 0


@pytest.mark.parametrize("temperature", [0.05, 0.1])
def test_certain_negative_stays_finite_and_accurate(temperature):
    """A negative identical to the query and a positive opposite to it: P_ij → 1 for that negative."""
    a, c = unit(1, 8, seed=8)[0], unit(1, 8, seed=9)[0]
    z1 = torch.stack([a, a]).float()  # rows 0 and 1 are the same image content
    z2 = torch.stack([-a, c]).float()  # row 0's positive points away from it
    ok, loss = _finite_with_grads(z1, z2, temperature=temperature)
    assert ok
    assert not math.isfinite(naive_invariant_spread_loss(z1, z2, temperature).item())  # literal fp32 fails
    ok64, loss64 = _finite_with_grads(z1.double(), z2.double(), temperature=temperature)
    assert ok64 and torch.allclose(loss.double(), loss64, rtol=1e-5)  # float32 as accurate as float64
    if temperature == 0.1:  # 1 − P_ij ≈ e^−20: float64 still resolves it (at T = 0.05 it cannot)
        want = literal_loss(z1.double(), z2.double(), temperature)
        assert torch.allclose(loss.double(), want, rtol=1e-5)


def test_two_images_and_one_image():
    z1, z2 = unit(2, 4, seed=10), unit(2, 4, seed=11)
    assert torch.allclose(InvariantSpreadLoss()(z1, z2).double(), literal_loss(z1, z2))
    one = InvariantSpreadLoss()(unit(1, 4, seed=12), unit(1, 4, seed=13))
    assert one.item() == pytest.approx(0.0)  # no negatives: the positive is certain


def test_autocast_bf16_runs_in_float32():
    lin = torch.nn.Linear(16, 32)
    x1, x2 = torch.randn(8, 16), torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = F.normalize(lin(x1), dim=1), F.normalize(lin(x2), dim=1)
        assert z1.dtype == torch.bfloat16 or z1.dtype == torch.float32
        loss = InvariantSpreadLoss(0.05)(z1, z2)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(lin.weight.grad).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=0),
        dict(temperature=-1),
        dict(temperature=float("nan")),
        dict(temperature=float("inf")),
        dict(negative_weight=0.5),
        dict(negative_weight=float("nan")),
    ],
)
def test_bad_arguments_rejected(kwargs):
    """Our own error type (one line at the CLI, with what is allowed), still a ValueError for callers."""
    with pytest.raises(ConfigError, match="must be") as info:
        InvariantSpreadLoss(**kwargs)
    assert isinstance(info.value, ValueError) and "The paper uses" in str(info.value)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="same shape"):
        InvariantSpreadLoss()(unit(4, 8), unit(3, 8))
