"""``MergePruningCache``: a transformers ``Cache`` that never stores keys/values of duplicate codes.

MergeAR's rule (paper Sec. 4.1): a position whose code already occurred earlier in its sequence is a
duplicate; later queries never attend to it, but it still attends to itself. The cache therefore keeps,
per sample, only the start tokens and the first occurrence of every code:

* buffers ``[B, heads, capacity, head_dim]`` per layer, grown in blocks (never per step);
* ``lengths`` [B]: entries stored per sample (ragged across the batch; slots past it are invalid);
* ``seen`` [B, num_codes + 1] bool: which codes a sample has stored, so a new token is recognised as a duplicate
  with one gather (no scan over the stored entries); the last column absorbs start tokens;
* positions stay the logical raster positions: ``get_seq_length()`` counts every token processed,
  stored or not (what ``generate()`` needs to slice its inputs).

One step (one forward call): :meth:`plan_step` (decides which new tokens are kept and builds the
attention mask), then every layer's ``update`` writes all new entries at ``lengths[b]`` onwards and
returns the visible buffer, then :meth:`finish_step` advances ``lengths`` by the kept count, compacting
only when a multi-token step contained duplicates. A dropped entry is simply overwritten next step.

A one-token step (decoding) reads ``lengths`` on the host once (its minimum and maximum: how many slots are
visible) and needs no attention mask at all when every row has stored the same number of entries (one image,
with or without its CFG twin); otherwise the mask is one comparison ``slot <= lengths[b]``.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


def duplicate_mask(codes: torch.Tensor) -> torch.Tensor:
    """codes [B, N] -> bool [B, N]: True where the same code occurs at an earlier position of the row.
    Negative entries (start tokens) are never duplicates."""
    order = torch.sort(codes, dim=1, stable=True)
    sorted_codes = order.values
    repeated = torch.zeros_like(codes, dtype=torch.bool)
    repeated[:, 1:] = sorted_codes[:, 1:] == sorted_codes[:, :-1]
    dup = torch.zeros_like(repeated).scatter_(1, order.indices, repeated)
    return dup & (codes >= 0)


class MergePruningLayer(CacheLayerMixin):
    """Keys/values of one decoder layer; the bookkeeping is shared through the parent cache."""

    is_croppable = False

    def __init__(self, cache: MergePruningCache):
        super().__init__()
        self.cache = cache

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads, _, dim = key_states.shape
        self.keys = key_states.new_zeros(batch, heads, self.cache.capacity, dim)
        self.values = value_states.new_zeros(batch, heads, self.cache.capacity, value_states.shape[-1])
        self.is_initialized = True

    def grow(self, capacity: int) -> None:
        if self.is_initialized and self.keys.shape[2] < capacity:
            pad = capacity - self.keys.shape[2]
            self.keys = torch.nn.functional.pad(self.keys, (0, 0, 0, pad))
            self.values = torch.nn.functional.pad(self.values, (0, 0, 0, pad))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        slots = self.cache.step_slots  # [B, q] where the new entries go (lengths[b] + i)
        index = slots[:, None, :, None]
        self.keys.scatter_(2, index.expand(-1, self.keys.shape[1], -1, self.keys.shape[3]), key_states)
        self.values.scatter_(2, index.expand(-1, self.values.shape[1], -1, self.values.shape[3]), value_states)
        visible = self.cache.step_visible
        return self.keys[:, :, :visible], self.values[:, :, :visible]

    def compact(self, gather_index: torch.Tensor) -> None:
        """Reorder slots [B, capacity] so kept entries are contiguous (multi-token steps only)."""
        if self.is_initialized:
            index = gather_index[:, None, :, None]
            self.keys = self.keys.gather(2, index.expand(-1, self.keys.shape[1], -1, self.keys.shape[3]))
            self.values = self.values.gather(2, index.expand(-1, self.values.shape[1], -1, self.values.shape[3]))

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.seen_tokens + query_length, 0

    def get_seq_length(self) -> int:
        return self.cache.seen_tokens

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        if self.is_initialized:
            self.keys.zero_()
            self.values.zero_()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_initialized:
            self.keys = self.keys.index_select(0, beam_idx.to(self.keys.device))
            self.values = self.values.index_select(0, beam_idx.to(self.values.device))


class MergePruningCache(Cache):
    """KV cache of MergeAR that stores only the first occurrence of each code (see module docstring).

    Args:
        num_layers: decoder layers.
        prune: False keeps every token (a dense cache with identical bookkeeping, for comparisons).
        block_size: buffers grow by this many slots when a sample needs more room.
        initial_capacity: slots to pre-allocate (e.g. start tokens + expected distinct codes).
        num_codes: size of the code vocabulary (2^code_dim), for the ``seen`` table; None: grown to the largest
            code met (one host read per step that brings a new maximum).
    """

    def __init__(
        self,
        num_layers: int,
        prune: bool = True,
        block_size: int = 64,
        initial_capacity: int = 64,
        num_codes: int | None = None,
    ):
        self.prune = prune
        self.block_size = block_size
        self.capacity = max(initial_capacity, 1)
        self.num_codes = num_codes
        self.seen_tokens = 0
        self.lengths: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        self.step_slots: torch.Tensor | None = None
        self.step_visible = 0
        self._step_keep: torch.Tensor | None = None
        super().__init__(layers=[MergePruningLayer(self) for _ in range(num_layers)])

    # ------------------------------------------------------------------ per-step protocol
    def plan_step(self, codes: torch.Tensor) -> torch.Tensor | None:
        """Declare the next ``q`` tokens (codes [B, q], -1 for start tokens); returns the boolean attention
        mask [B, 1, q, visible] (True = may attend) the layers must use for this step, or None when every query
        may attend to every visible slot (one-token steps with equal ``lengths``)."""
        batch, q = codes.shape
        device = codes.device
        if self.lengths is None:
            self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        if batch != self.lengths.shape[0]:
            raise ValueError(f"batch size changed from {self.lengths.shape[0]} to {batch} inside one cache")
        shortest, longest = self.lengths.aminmax()
        shortest, longest = int(shortest), int(longest)  # the step's one host read
        slots_needed = longest + q
        if slots_needed > self.capacity:
            self.capacity = self.block_size * -(-slots_needed // self.block_size)
            for layer in self.layers:
                layer.grow(self.capacity)
        keep = torch.ones(batch, q, dtype=torch.bool, device=device)
        if self.prune:
            seen_before = self._seen_table(codes).gather(1, self._columns(codes))
            keep = ~seen_before if q == 1 else ~(seen_before | duplicate_mask(codes))
            keep = keep | (codes < 0)
        self._step_keep = keep
        self.step_slots = self.lengths[:, None] + torch.arange(q, device=device)
        self.step_visible = slots_needed
        self._step_codes = codes
        if q == 1:  # a query sees the stored entries and itself: slots 0..lengths[b]
            if shortest == longest:
                return None
            return (torch.arange(slots_needed, device=device) <= self.lengths[:, None])[:, None, None, :]
        # mask: stored past entries, plus kept earlier entries of this step, plus the query itself
        slot_ids = torch.arange(slots_needed, device=device)
        past = slot_ids[None, None, :] < self.lengths[:, None, None]  # [B, 1, S]
        rel = slot_ids[None, :] - self.lengths[:, None]  # [B, S] index within this step
        in_step = (rel >= 0) & (rel < q)
        rel_c = rel.clamp(0, q - 1)
        key_kept = keep.gather(1, rel_c) & in_step  # [B, S]
        query = torch.arange(q, device=device)[None, :, None]
        causal = rel[:, None, :] <= query
        own = rel[:, None, :] == query
        mask = past | (in_step[:, None, :] & causal & (key_kept[:, None, :] | own))
        return mask[:, None]

    def _columns(self, codes: torch.Tensor) -> torch.Tensor:
        """Column of each code in ``seen``; start tokens (< 0) go to the last column, which is never a code."""
        return torch.where(codes < 0, self.seen.shape[1] - 1, codes)

    def _seen_table(self, codes: torch.Tensor) -> torch.Tensor:
        if self.seen is None or (self.num_codes is None and int(codes.max()) + 1 >= self.seen.shape[1]):
            width = self.num_codes if self.num_codes is not None else max(int(codes.max()) + 1, 1) * 2
            table = torch.zeros(codes.shape[0], width + 1, dtype=torch.bool, device=codes.device)
            if self.seen is not None:  # grown: copy what was seen, start-token column stays last
                table[:, : self.seen.shape[1] - 1] = self.seen[:, :-1]
            self.seen = table
        return self.seen

    def finish_step(self) -> None:
        """After all layers ran: keep the step's non-duplicate entries, drop the rest."""
        keep, q = self._step_keep, self._step_keep.shape[1]
        if q > 1 and not bool(keep.all()):
            # stable compaction of this step's slots; entries past the new length are garbage
            batch = keep.shape[0]
            slot_ids = torch.arange(self.capacity, device=keep.device).expand(batch, -1)
            rel = slot_ids - self.lengths[:, None]
            in_step = (rel >= 0) & (rel < q)
            dropped = in_step & ~keep.gather(1, rel.clamp(0, q - 1))
            order = torch.sort(dropped.long(), dim=1, stable=True).indices
            for layer in self.layers:
                layer.compact(order)
        if self.prune:  # every code of the step is now stored (first occurrences) or was already
            self.seen.scatter_(1, self._columns(self._step_codes), True)
        self.lengths = self.lengths + keep.sum(1)
        self.seen_tokens += q
        self._step_keep = self._step_codes = self.step_slots = None

    # ------------------------------------------------------------------ Cache API
    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Logical tokens processed (stored or pruned): positions stay raster positions."""
        return self.seen_tokens

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    @property
    def num_stored(self) -> torch.Tensor:
        """Entries stored per sample [B] (start tokens + distinct codes)."""
        return self.lengths

    def kv_bytes(self, allocated: bool = True) -> int:
        """Bytes of keys + values: allocated buffers, or only the valid entries (``allocated=False``)."""
        total = 0
        for layer in self.layers:
            if layer.is_initialized:
                per_slot = (layer.keys[:, :, :1].numel() + layer.values[:, :, :1].numel()) // layer.keys.shape[0]
                per_slot *= layer.keys.element_size()
                total += per_slot * (
                    layer.keys.shape[0] * layer.keys.shape[2] if allocated else int(self.lengths.sum())
                )
        return total

    def reset(self) -> None:
        super().reset()
        self.seen_tokens = 0
        self.lengths = self.seen = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.lengths is not None:
            self.lengths = self.lengths.index_select(0, beam_idx.to(self.lengths.device))
        if self.seen is not None:
            self.seen = self.seen.index_select(0, beam_idx.to(self.seen.device))
