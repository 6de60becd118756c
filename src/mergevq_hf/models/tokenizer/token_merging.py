"""Token merging (ToMe) as small pure functions, plus the per-layer merge schedules.

Bookkeeping travels in return values, never on modules:

* ``size``  [B, t, 1]  how many original positions each current token covers (None before any merge);
* ``owner`` [B, L]     for every original raster position, the index of the current token that holds it.

After the last block ``owner`` (minus the CLS offset) is the ``source`` group-id vector of the contract.
The dense K x L 0/1 source matrix is derived from it by :func:`source_to_matrix` only on request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MERGE_SCHEDULES = ("linear", "square")


# --------------------------------------------------------------------------------------------------
# Merge schedules: how many tokens each block removes so that exactly L - K are removed in total.
# --------------------------------------------------------------------------------------------------
def _tome_linear_base(num_layers: int, r: int, inflection: float = -0.5) -> list[int]:
    """ToMe ``parse_r``: a linear ramp from ``int(r * (1 - inflection))`` down to ``2r - start``."""
    min_val = int(r * (1.0 - inflection))
    max_val = 2 * r - min_val
    step = (max_val - min_val) / (num_layers - 1) if num_layers > 1 else 0.0
    return [int(min_val + step * i) for i in range(num_layers)]


def max_removable(num_current: int, num_layers: int, protected: int = 1) -> int:
    """Most tokens ``num_layers`` blocks can remove starting from ``num_current`` tokens."""
    removed = 0
    for _ in range(num_layers):
        r = (num_current - protected) // 2
        removed, num_current = removed + r, num_current - r
    return removed


def _fit_schedule(schedule: list[int], total: int, num_positions: int, protected: int = 1) -> list[int]:
    """Clamp a schedule to what each block can remove (at most half of its mergeable tokens) and
    make it remove exactly ``total`` tokens, staying as close to the wish as the caps allow. For
    schedules that already fit (every official setting) this returns the schedule unchanged."""
    num_layers = len(schedule)
    if total > max_removable(num_positions + protected, num_layers, protected):
        raise ValueError(f"cannot remove {total} of {num_positions} tokens in {num_layers} blocks")
    fitted, t, removed = [], num_positions + protected, 0
    for i, wish in enumerate(schedule):
        needed, later = total - removed, num_layers - i - 1
        upper = min((t - protected) // 2, needed)
        lower = 0
        while lower < upper and lower + max_removable(t - lower, later, protected) < needed:
            lower += 1
        r = min(max(int(wish), lower), upper)
        fitted.append(r)
        removed, t = removed + r, t - r
    return fitted


def merge_schedule(num_positions: int, num_tokens: int, num_layers: int, kind: str = "linear") -> list[int]:
    """Tokens removed by each of ``num_layers`` ToMe blocks to go from ``num_positions`` (L) to
    ``num_tokens`` (K) tokens.

    ``kind="linear"`` is the official MergeVQ schedule: the ToMe linear ramp (1.5 r .. 0.5 r) whose
    sum is closest to L - K, with the remainder added to block 0. ``kind="square"`` is the paper's
    square-decreasing schedule, r_i proportional to (num_layers - i)^2.
    """
    total = num_positions - num_tokens
    if kind == "linear":
        best_r, best_gap = 0, math.inf
        for r in range(num_positions + 1):
            gap = abs(sum(_tome_linear_base(num_layers, r)) - total)
            if gap < best_gap:
                best_r, best_gap = r, gap
        schedule = _tome_linear_base(num_layers, best_r)
        schedule[0] += total - sum(schedule)
    elif kind == "square":
        weights = [(num_layers - i) ** 2 for i in range(num_layers)]
        schedule = [total * w // sum(weights) for w in weights]
        for i in range(total - sum(schedule)):
            schedule[i % num_layers] += 1
    else:
        raise ValueError(f"merge schedule {kind!r} is not one of {MERGE_SCHEDULES}")
    return _fit_schedule(schedule, total, num_positions)


# --------------------------------------------------------------------------------------------------
# Bipartite soft matching.
# --------------------------------------------------------------------------------------------------
@dataclass
class MergePlan:
    """Which tokens one ToMe step merges. Set A = even sequence positions, set B = odd ones.

    unm_idx [B, tA - r]: A tokens kept (ascending), src_idx [B, r]: A tokens merged away,
    dst_idx [B, r]: the B token each of them merges into.
    """

    unm_idx: torch.Tensor
    src_idx: torch.Tensor
    dst_idx: torch.Tensor

    @property
    def r(self) -> int:
        return self.src_idx.shape[1]


def bipartite_soft_matching(metric: torch.Tensor, r: int, protect_first: bool = True) -> MergePlan:
    """Plan one ToMe merge from ``metric`` [B, t, c] (keys averaged over heads).

    Each A token (even position) picks its most cosine-similar B token (odd position); the ``r`` A
    tokens with the best match merge into it. The first token (CLS) is never merged.
    """
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)
        if protect_first:
            scores[..., 0, :] = -math.inf
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)
        unm_idx = edge_idx[..., r:].sort(dim=-1)[0]
        src_idx = edge_idx[..., :r]
        dst_idx = node_idx.gather(dim=-1, index=src_idx)
    return MergePlan(unm_idx=unm_idx, src_idx=src_idx, dst_idx=dst_idx)


def merge_tokens(x: torch.Tensor, plan: MergePlan, reduce: str = "sum") -> torch.Tensor:
    """Apply ``plan`` to ``x`` [B, t, c] -> [B, t - r, c] ordered [unmerged A tokens, all B tokens]."""
    src, dst = x[..., ::2, :], x[..., 1::2, :]
    n, t1, c = src.shape
    r = plan.r
    unm = src.gather(dim=-2, index=plan.unm_idx[..., None].expand(n, t1 - r, c))
    src = src.gather(dim=-2, index=plan.src_idx[..., None].expand(n, r, c))
    dst = dst.scatter_reduce(-2, plan.dst_idx[..., None].expand(n, r, c), src, reduce=reduce)
    return torch.cat([unm, dst], dim=1)


def merge_weighted_average(
    x: torch.Tensor, size: torch.Tensor | None, plan: MergePlan
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge of ``x`` [B, t, c]; returns (x [B, t-r, c], size [B, t-r, 1])."""
    if size is None:
        size = torch.ones_like(x[..., 0, None])
    x = merge_tokens(x * size, plan, reduce="sum")
    size = merge_tokens(size, plan, reduce="sum")
    return x / size, size


def merge_owner(owner: torch.Tensor, plan: MergePlan, num_current: int) -> torch.Tensor:
    """Update the position -> token map ``owner`` [B, L] after ``plan`` merged ``num_current`` tokens."""
    batch = owner.shape[0]
    num_a = (num_current + 1) // 2
    num_kept_a = num_a - plan.r
    device = owner.device
    new_index_a = torch.empty(batch, num_a, dtype=torch.long, device=device)
    new_index_a.scatter_(1, plan.unm_idx, torch.arange(num_kept_a, device=device).expand(batch, -1))
    new_index_a.scatter_(1, plan.src_idx, num_kept_a + plan.dst_idx)
    new_index_b = num_kept_a + torch.arange(num_current // 2, device=device).expand(batch, -1)
    # interleave back to sequence order: position 2i is A[i], position 2i+1 is B[i]
    old_to_new = torch.empty(batch, num_current, dtype=torch.long, device=device)
    old_to_new[:, ::2] = new_index_a
    old_to_new[:, 1::2] = new_index_b
    return old_to_new.gather(1, owner)


# --------------------------------------------------------------------------------------------------
# Source helpers.
# --------------------------------------------------------------------------------------------------
def source_to_matrix(source: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Group ids ``source`` [B, L] in [0, K) -> dense 0/1 source matrix S [B, K, L] (S[b,k,l] = 1 iff
    position l belongs to token k)."""
    matrix = torch.zeros(source.shape[0], num_tokens, source.shape[1], dtype=torch.float32, device=source.device)
    return matrix.scatter_(1, source[:, None, :], 1.0)


def group_sizes(source: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """How many positions each of the K tokens covers: [B, K] long."""
    sizes = torch.zeros(source.shape[0], num_tokens, dtype=torch.long, device=source.device)
    return sizes.scatter_add_(1, source, torch.ones_like(source))


def representative_positions(source: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The raster position of each merged token: the FIRST (lowest raster index) position of its group.

    source [B, L] group ids in [0, K) -> [B, K] long. Every group is non-empty, so every value is a real
    position; position 0 always represents its group. This is the position a random-order generator places a
    merged token at, and the positional input of source recovery (one definition for both).
    """
    batch, length = source.shape
    positions = torch.arange(length, device=source.device).expand(batch, -1)
    first = torch.full((batch, num_tokens), length, dtype=torch.long, device=source.device)
    return first.scatter_reduce_(1, source, positions, reduce="amin")
