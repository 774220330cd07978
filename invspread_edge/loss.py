"""The Invariant and Spreading loss (Ye, Zhang, Yuen, Chang, CVPR 2019, Eq. 3–7), computed in log space.

Semantics follow the authors' `BatchCriterion`: every row of x = [f(view₁); f(view₂)] is a query, the
other 2B − 1 rows are its candidates (self excluded), the other view of the same image is the
positive, and the loss is

    J = −(1/2B) Σ_i [ log P_i + m · Σ_{j ∉ {i, p(i)}} log(1 − P_ij) ],
    P_i = e^{s_i,p(i)} / D_i,  P_ij = e^{s_ij} / D_i,  D_i = e^{s_i,p(i)} + m · Σ_neg e^{s_ij},  s = x·xᵀ / T.

Nothing overflows or cancels: each row's terms are taken relative to its most similar negative
(Σ e^{s_j} = e^{top} Σ e^{s_j − top}), log D_i is assembled in log space, log(1 − P_ij) is
log1p(−P_ij) for every negative but the top one (only the top one can have P_ij > 1/2), and the top
one's complement log(D_i − e^{top}) − log D_i is summed from the other terms of D_i, never computed
as 1 − P. The loss stays finite and accurate at T = 0.05, with identical views, or when a negative
is certain; under autocast it runs in float32. The gradient is written out (see _InvariantSpread):
it is tested against autograd of the literal equations and against finite differences.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from invspread_edge_runtime.errors import ConfigError

from .distributed import gather_with_grad, get_rank, get_world_size


class InvariantSpreadLoss(nn.Module):
    """Instance-discrimination loss of Ye et al. (2019) on two L2-normalised views.

    Args:
        temperature: T in s_ij = x_i · x_j / T (the paper's 0.1).
        negative_weight: m, the weight of the negatives in D_i and in the loss (≥ 1; the paper's 1).
        detach_keys: as the authors' code, let gradient flow only through each row x_i, not through
            the candidates it is compared with (the "keys"). False lets it flow through both.
        gather_distributed: under torch.distributed, take negatives from the whole global batch
            (all-gather), so N processes × B images give the loss of one process × N·B images.

    Raises:
        ConfigError (a ValueError): for a temperature ≤ 0 or a negative weight < 1.

    Example:
        >>> loss_fn = InvariantSpreadLoss(temperature=0.1)
        >>> loss = loss_fn(model(view1), model(view2))  # two (B, d) unit-length batches
    """

    def __init__(
        self,
        temperature: float = 0.1,
        negative_weight: float = 1.0,
        detach_keys: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(
                f"temperature must be > 0 and finite, got {temperature}",
                "The paper uses 0.1 (--temperature 0.1); 0.05-0.5 are sensible",
            )
        if not (math.isfinite(negative_weight) and negative_weight >= 1):
            raise ConfigError(
                f"negative_weight must be >= 1, got {negative_weight}: below 1 a negative's P_ij can "
                "exceed 1 and log(1 - P_ij) is undefined",
                "The paper uses 1",
            )
        self.temperature = float(temperature)
        self.negative_weight = float(negative_weight)
        self.detach_keys = detach_keys
        self.gather_distributed = gather_distributed
        self._cache: dict[tuple, tuple] = {}

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """z1, z2: (B, d) embeddings of view 1 and view 2 of the same B images → scalar J."""
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(
                f"expected two (B, d) batches of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        with torch.autocast(device_type=z1.device.type, enabled=False):
            dtype = torch.promote_types(z1.dtype, torch.float32)  # half → float32, float64 stays
            z1, z2 = z1.to(dtype), z2.to(dtype)
            b = z1.shape[0]  # b = local batch size, n = b * world_size
            world, rank = get_world_size(), get_rank()
            if self.gather_distributed and world > 1:
                g1, g2 = gather_with_grad(z1), gather_with_grad(z2)  # (n, d) each
                n = g1.shape[0]
                keys = torch.cat([g1, g2])  # (2n, d): all view-1 rows, then all view-2 rows
                offset = rank * b
            rows = torch.cat([z1, z2])  # (2b, d): this process's queries
            if not (self.gather_distributed and world > 1):
                n, keys, offset = b, rows, 0
            if self.detach_keys:
                keys = keys.detach()
            pos_index, excluded = self._layout(b, n, offset, z1.device)
            return self._per_row(rows, keys, pos_index, excluded).mean()

    def _layout(self, b: int, n: int, offset: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each local row's positive column (r,) and the (r, 2n) mask of its non-negatives; cached."""
        key = (b, n, offset, str(device))
        if key not in self._cache:
            local = torch.arange(b, device=device) + offset
            row_index = torch.cat([local, local + n])  # where each row itself sits among the keys
            pos_index = torch.cat([local + n, local])  # its other view
            self._cache.clear()  # one batch layout at a time (the last batch of an epoch may differ)
            self._cache[key] = (pos_index, non_negatives(row_index, pos_index, 2 * n))
        return self._cache[key]

    def _per_row(
        self, rows: torch.Tensor, keys: torch.Tensor, pos_index: torch.Tensor, excluded: torch.Tensor
    ) -> torch.Tensor:
        """(r, d) queries against (k, d) keys → (r,) loss terms −[log P_i + m Σ log(1 − P_ij)]."""
        return _InvariantSpread.apply(rows, keys, pos_index, excluded, self.temperature, self.negative_weight)


class _InvariantSpread(torch.autograd.Function):
    """Per-row loss with its gradient written out: a handful of (r, k) passes instead of autograd's
    few dozen small ops, which keeps the stable loss as fast as the literal one.

    With P_j = e^{s_j}/D over the negatives N, P_p for the positive and Q = Σ_N P_j / (1 − P_j):
        ∂ℓ/∂s_p = −1 + P_p (1 − mQ),   ∂ℓ/∂s_j = m P_j (1 − mQ) + m P_j / (1 − P_j)   (j ∈ N),
    and s = rows · keysᵀ / T carries it to the rows (and the keys, when they are not detached).
    Every pass runs over the whole (r, k) matrix: self and positive are masked to s = −∞, so their
    P_j, odds and gradient are exactly 0 and no gather or scatter of the negatives is needed.
    1 − P_j of the top negative comes from its log-space complement, never from 1 − P_j itself.
    """

    @staticmethod
    def forward(ctx, rows, keys, pos_index, excluded, temperature, m):  # type: ignore[override]
        inv_t = 1.0 / temperature
        ctx.inv_t, ctx.m = inv_t, m
        s = (rows @ keys.T).mul_(inv_t)  # (r, k)
        s_pos = s.gather(1, pos_index[:, None]).squeeze(1)  # (r,)
        if keys.shape[0] <= 2:  # B = 1 on one process: no negatives, the positive is certain
            ctx.save_for_backward(rows, keys)
            return torch.zeros_like(s_pos)
        s.masked_fill_(excluded, -math.inf)  # the negatives only
        top_val = s.amax(dim=1, keepdim=True)  # the most similar negative
        top_v = top_val.squeeze(1)
        e = s.sub_(top_val).exp_()  # e^{s_j − top} in (0, 1]; 0 off the negatives
        # the top (and any negative tied with it: the same P_j and 1 − P_j) is taken out of the sums,
        # so that no sum below has to subtract it; its c copies are counted back in
        tops = e.floor()  # 1 where e^{s_j − top} = 1, else 0
        c = tops.sum(dim=1)
        rest = e.sub_(tops).sum(dim=1).add_(c - 1)  # Σ_{N∖top} e^{s_j − top}
        log_neg = top_v + torch.log1p(rest)
        if m != 1:
            log_neg = log_neg + math.log(m)
        log_d = torch.logaddexp(s_pos, log_neg)  # (r,) log D_i
        log_p_top = top_v - log_d
        log_p_pos = s_pos - log_d
        p_top = torch.exp(log_p_top)
        p_others = e.mul_(p_top[:, None])  # P_j of the negatives but the top (0 there)
        # log(1 − P_j): log1p for the others (P_j ≤ 1/2 there); for the top, log(D − e^{top}) − log D
        # from the other terms of D, without cancellation even when P_top rounds to 1
        log_comp_top = torch.logaddexp(log_p_pos, log_p_top + torch.log(rest * m))
        if m > 1:  # D − e^{top} keeps (m − 1)·e^{top}
            log_comp_top = torch.logaddexp(log_comp_top, log_p_top + math.log(m - 1))
        neg_sum = p_others.neg().log1p_().sum(dim=1) + c * log_comp_top
        ctx.save_for_backward(rows, keys, pos_index, tops, c, log_p_pos, log_p_top, log_comp_top, p_others)
        return -(log_p_pos + m * neg_sum)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if len(ctx.saved_tensors) == 2:
            rows, keys = ctx.saved_tensors
            g_rows = torch.zeros_like(rows) if ctx.needs_input_grad[0] else None
            g_keys = torch.zeros_like(keys) if ctx.needs_input_grad[1] else None
            return g_rows, g_keys, None, None, None, None
        rows, keys, pos_index, tops, c, log_p_pos, log_p_top, log_comp_top, p_others = ctx.saved_tensors
        m = ctx.m
        odds = torch.div(p_others, p_others.neg().add_(1))  # P_j / (1 − P_j) of the others
        odds_top = torch.exp(log_p_top - log_comp_top)  # the top's, from its log complement
        p_top = torch.exp(log_p_top)
        one_minus_mq = 1 - m * (odds.sum(dim=1) + c * odds_top)  # (r,)
        scale = grad_out * ctx.inv_t  # dJ/ds = dJ/d(rows · keysᵀ) / T
        g = odds.addcmul_(p_others, one_minus_mq[:, None])
        g.addcmul_(tops, (odds_top + p_top * one_minus_mq)[:, None]).mul_((scale * m)[:, None])
        g_pos = (torch.exp(log_p_pos) * one_minus_mq - 1) * scale
        g.scatter_(1, pos_index[:, None], g_pos[:, None])  # 0 off the negatives until here
        g_rows = g @ keys if ctx.needs_input_grad[0] else None
        g_keys = g.T @ rows if ctx.needs_input_grad[1] else None
        return g_rows, g_keys, None, None, None, None


def non_negatives(row_index: torch.Tensor, pos_index: torch.Tensor, k: int) -> torch.Tensor:
    """(r, k) bool: True at each row's own column and its positive's, the columns that are no negative."""
    cols = torch.arange(k, device=row_index.device)
    return (cols == row_index[:, None]) | (cols == pos_index[:, None])


def naive_invariant_spread_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, negative_weight: float = 1.0
) -> torch.Tensor:
    """Eq. 3–7 written literally (exp, divide, log), keys detached: the authors' arithmetic.

    Not numerically safe (overflows and NaNs at small T); kept as the reference the stable loss is
    tested and benchmarked against.
    """
    x = torch.cat([z1, z2])  # (2B, d)
    n2, b = x.shape[0], z1.shape[0]
    partner = torch.cat([x[b:], x[:b]]).detach()
    pos = torch.exp((x * partner).sum(1) / temperature)  # e^{s_i,p(i)}
    all_prob = torch.exp(x @ x.detach().T / temperature) * (1 - torch.eye(n2, device=x.device, dtype=x.dtype))
    all_div = (all_prob.sum(1) - pos) * negative_weight + pos  # D_i
    p_pos = pos / all_div
    log_neg = torch.log(1 - all_prob / all_div[:, None]).sum(1) - torch.log(1 - p_pos)
    return -(torch.log(p_pos).sum() + negative_weight * log_neg.sum()) / n2
