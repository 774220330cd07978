"""The Invariant and Spreading loss (Ye, Zhang, Yuen, Chang, CVPR 2019, Eq. 3–7), computed in log space.

Semantics follow the authors' `BatchCriterion`: every row of x = [f(view₁); f(view₂)] is a query, the
other 2B − 1 rows are its candidates (self excluded), the other view of the same image is the
positive, and the loss is

    J = −(1/2B) Σ_i [ log P_i + m · Σ_{j ∉ {i, p(i)}} log(1 − P_ij) ],
    P_i = e^{s_i,p(i)} / D_i,  P_ij = e^{s_ij} / D_i,  D_i = e^{s_i,p(i)} + m · Σ_neg e^{s_ij},  s = x·xᵀ / T.

Nothing is exponentiated raw: log D_i is a logsumexp, log(1 − P_ij) is `log1mexp(log P_ij)`, and the
one candidate per row whose P_ij may be close to 1 (the most similar negative) gets its complement
from a logsumexp over the other candidates, so the loss stays finite and accurate even at T = 0.05,
with identical views, or when a negative is certain. Under autocast it runs in float32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

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
        ValueError: for a temperature ≤ 0 or a negative weight < 1.

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
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (the paper uses 0.1), got {temperature}")
        if not negative_weight >= 1:
            raise ValueError(
                f"negative_weight must be >= 1 (the paper uses 1), got {negative_weight}: below 1 a "
                "negative's P_ij can exceed 1 and log(1 - P_ij) is undefined"
            )
        self.temperature = float(temperature)
        self.negative_weight = float(negative_weight)
        self.detach_keys = detach_keys
        self.gather_distributed = gather_distributed

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
            else:
                n, keys, offset = b, torch.cat([z1, z2]), 0
            rows = torch.cat([z1, z2])  # (2b, d): this process's queries
            local = torch.arange(b, device=z1.device) + offset
            row_index = torch.cat([local, local + n])  # where each row sits among the keys
            pos_index = torch.cat([local + n, local])  # its other view
            if self.detach_keys:
                keys = keys.detach()
            per_row = self._per_row(rows, keys, row_index, pos_index)
            return per_row.mean()

    def _per_row(
        self, rows: torch.Tensor, keys: torch.Tensor, row_index: torch.Tensor, pos_index: torch.Tensor
    ) -> torch.Tensor:
        """(r, d) queries against (k, d) keys → (r,) loss terms −[log P_i + m Σ log(1 − P_ij)]."""
        r, k = rows.shape[0], keys.shape[0]
        s = rows @ keys.T / self.temperature  # (r, k)
        ar = torch.arange(r, device=rows.device)
        is_self = torch.zeros(r, k, dtype=torch.bool, device=rows.device)
        is_self[ar, row_index] = True
        is_pos = torch.zeros_like(is_self)
        is_pos[ar, pos_index] = True
        is_neg = ~(is_self | is_pos)
        has_neg = k > 2

        log_m = math.log(self.negative_weight)
        neg_inf = torch.tensor(float("-inf"), device=s.device)
        # log of each candidate's weighted term in D_i: log m + s_ij for negatives, s_ip for the positive
        terms = torch.where(is_self, neg_inf, s + is_neg * log_m)
        log_d = torch.logsumexp(terms, dim=1, keepdim=True)  # (r, 1)
        log_p = s - log_d  # log P_ij for every candidate (unweighted numerator, as the authors')
        pos_term = log_p[ar, pos_index]  # (r,) log P_i
        if not has_neg:
            return -pos_term

        # The most similar negative is the only one whose P_ij can exceed 1/2 (P sums to ≤ 1):
        # its log(1 − P_ij) = log(D_i − e^{s_ij}) − log D_i from a logsumexp without that term.
        top = torch.where(is_neg, s, neg_inf).argmax(dim=1)  # (r,)
        is_top = torch.zeros_like(is_self)
        is_top[ar, top] = True
        others = is_neg & ~is_top
        safe = torch.where(others, log_p, torch.full_like(log_p, -1.0))  # ≤ −log 2 where used
        neg_terms = torch.where(others, log1mexp(safe), torch.zeros_like(log_p)).sum(dim=1)
        rest_weight = self.negative_weight - 1.0  # D_i − e^{s_ij} keeps (m − 1)·e^{s_ij}
        top_term = torch.where(
            is_top,
            s + math.log(rest_weight) if rest_weight > 0 else neg_inf.expand_as(s),
            terms,
        )
        top_complement = torch.logsumexp(top_term, dim=1) - log_d.squeeze(1)
        return -(pos_term + self.negative_weight * (neg_terms + top_complement))


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 − e^a) for a < 0, accurate at both ends (Mächler 2012).

    Each branch sees only inputs in its own range, so neither produces inf/NaN gradients.
    """
    cut = -math.log(2.0)
    near = a.clamp(min=cut, max=-torch.finfo(a.dtype).tiny)
    far = a.clamp(max=cut)
    return torch.where(a > cut, torch.log(-torch.expm1(near)), torch.log1p(-torch.exp(far)))


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
