"""``MergePruningCache``: a transformers ``Cache`` that never stores keys/values of duplicate codes.

MergeAR's rule (paper Sec. 4.1): a position whose code already occurred earlier in its sequence is a
duplicate; later queries never attend to it, but it still attends to itself. The cache therefore keeps,
per sample, only the start tokens and the first occurrence of every code:

* buffers ``[rows, heads, capacity, head_dim]`` per layer and per *row group*, grown in blocks (never per step).
  Rows given different capacities up front (``row_capacity``, e.g. start tokens + K of each image) form one
  group per capacity, so a batch mixing K = 36 and K = 256 allocates what each row needs rather than the
  largest row's size for all; every group attends with its own call. One capacity: one group, one call;
* ``lengths`` [B]: entries stored per sample (ragged across the batch; slots past it are invalid);
* ``seen`` [B, num_codes + 1] bool: which codes a sample has stored, so a new token is recognised as a duplicate
  with one gather (no scan over the stored entries); the last column absorbs start tokens;
* positions stay the logical raster positions: ``get_seq_length()`` counts every token processed,
  stored or not (what ``generate()`` needs to slice its inputs).

One step (one forward call): :meth:`plan_step` (decides which new tokens are kept and builds the
attention mask), then every layer's ``update`` writes all new entries at ``lengths[b]`` onwards and
returns the visible buffer, then :meth:`finish_step` advances ``lengths`` by the kept count, compacting
only when a multi-token step contained duplicates. A dropped entry is simply overwritten next step.

A step reads ``lengths`` on the host once (how many slots each group must show). A one-token step (decoding)
needs no attention mask at all in a group whose rows have stored the same number of entries (one image, with or
without its CFG twin); otherwise its mask is one comparison ``slot <= lengths[b]``.
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
    """Keys/values of one decoder layer, one buffer per row group; the bookkeeping is shared through the parent
    cache. ``keys`` / ``values`` are the buffers themselves when there is one group (None otherwise)."""

    is_croppable = False

    def __init__(self, cache: MergePruningCache):
        super().__init__()
        self.cache = cache
        self.key_groups: list[torch.Tensor] = []
        self.value_groups: list[torch.Tensor] = []

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        heads, dim, value_dim = key_states.shape[1], key_states.shape[3], value_states.shape[3]
        for rows, capacity in zip(self.cache.group_rows, self.cache.group_capacity):
            self.key_groups.append(key_states.new_zeros(len(rows), heads, capacity, dim))
            self.value_groups.append(value_states.new_zeros(len(rows), heads, capacity, value_dim))
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        single = len(self.key_groups) == 1
        self.keys = self.key_groups[0] if single else None
        self.values = self.value_groups[0] if single else None

    def grow(self, group: int, capacity: int) -> None:
        if self.is_initialized and self.key_groups[group].shape[2] < capacity:
            pad = (0, 0, 0, capacity - self.key_groups[group].shape[2])
            self.key_groups[group] = torch.nn.functional.pad(self.key_groups[group], pad)
            self.value_groups[group] = torch.nn.functional.pad(self.value_groups[group], pad)
            self._expose()

    def write(self, group: int, key_states: torch.Tensor, value_states: torch.Tensor):
        """Write the group's new entries at ``lengths[b]`` onwards; returns its visible keys and values."""
        slots = self.cache.group_step_slots[group][:, None, :, None]  # [rows, 1, q, 1]
        keys, values = self.key_groups[group], self.value_groups[group]
        keys.scatter_(2, slots.expand(-1, keys.shape[1], -1, keys.shape[3]), key_states)
        values.scatter_(2, slots.expand(-1, values.shape[1], -1, values.shape[3]), value_states)
        visible = self.cache.group_visible[group]
        return keys[:, :, :visible], values[:, :, :visible]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """transformers' ``Cache.update`` for a cache with one row group (:meth:`MergePruningCache.attend` handles
        several)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if len(self.key_groups) != 1:
            raise ValueError("this cache has several row groups: attend through MergePruningCache.attend")
        return self.write(0, key_states, value_states)

    def compact(self, group: int, gather_index: torch.Tensor) -> None:
        """Reorder a group's slots [rows, capacity] so kept entries are contiguous (multi-token steps only)."""
        if self.is_initialized:
            index = gather_index[:, None, :, None]
            for buffers in (self.key_groups, self.value_groups):
                buffer = buffers[group]
                buffers[group] = buffer.gather(2, index.expand(-1, buffer.shape[1], -1, buffer.shape[3]))
            self._expose()

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.seen_tokens + query_length, 0

    def get_seq_length(self) -> int:
        return self.cache.seen_tokens

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        for buffer in self.key_groups + self.value_groups:
            buffer.zero_()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_initialized:
            if len(self.key_groups) != 1:
                raise ValueError("reorder_cache needs a cache with one row group")
            self.key_groups = [self.key_groups[0].index_select(0, beam_idx.to(self.device))]
            self.value_groups = [self.value_groups[0].index_select(0, beam_idx.to(self.device))]
            self._expose()


class MergePruningCache(Cache):
    """KV cache of MergeAR that stores only the first occurrence of each code (see module docstring).

    Args:
        num_layers: decoder layers.
        prune: False keeps every token (a dense cache with identical bookkeeping, for comparisons).
        block_size: buffers grow by this many slots when a row needs more room.
        initial_capacity: slots to pre-allocate per row (e.g. start tokens + expected distinct codes).
        num_codes: size of the code vocabulary (2^code_dim), for the ``seen`` table; None: grown to the largest
            code met (one host read per step that brings a new maximum).
        row_capacity: slots to pre-allocate for each row ([B] ints; overrides ``initial_capacity``); rows with the
            same capacity share a buffer (a row group).
    """

    def __init__(
        self,
        num_layers: int,
        prune: bool = True,
        block_size: int = 64,
        initial_capacity: int = 64,
        num_codes: int | None = None,
        row_capacity=None,
    ):
        self.prune = prune
        self.block_size = block_size
        self.initial_capacity = max(int(initial_capacity), 1)
        self.row_capacity = None if row_capacity is None else [max(int(c), 1) for c in row_capacity]
        self.num_codes = num_codes
        self.seen_tokens = 0
        self.lengths: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        self.group_rows: list[torch.Tensor] = []  # row indices of each group (on the cache's device)
        self.group_row_lists: list[list[int]] = []  # the same on the host
        self.group_capacity: list[int] = []
        self.group_step_slots: list[torch.Tensor] = []
        self.group_visible: list[int] = []
        self.step_masks: list[torch.Tensor | None] = []
        self.step_slots_read = 0  # rows x visible slots summed over the groups: what this step's attention reads
        self._step_keep: torch.Tensor | None = None
        super().__init__(layers=[MergePruningLayer(self) for _ in range(num_layers)])

    @property
    def capacity(self) -> int:
        """Slots per row of the largest group buffer."""
        return max(self.group_capacity or self.row_capacity or [self.initial_capacity])

    def _make_groups(self, batch: int, device) -> None:
        capacities = self.row_capacity or [self.initial_capacity] * batch
        if len(capacities) != batch:
            raise ValueError(f"row_capacity has {len(capacities)} entries for a batch of {batch} rows")
        for capacity in sorted(set(capacities)):
            rows = [b for b, c in enumerate(capacities) if c == capacity]
            self.group_row_lists.append(rows)
            self.group_rows.append(torch.tensor(rows, device=device))
            self.group_capacity.append(capacity)

    # ------------------------------------------------------------------ per-step protocol
    def plan_step(self, codes: torch.Tensor) -> None:
        """Declare the next ``q`` tokens (codes [B, q], -1 for start tokens): decide which are kept, where they go
        and, per row group, how many slots are visible and the boolean attention mask [rows, 1, q, visible]
        (True = may attend; None when every query may attend to every visible slot)."""
        batch, q = codes.shape
        device = codes.device
        if self.lengths is None:
            self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
            self._make_groups(batch, device)
        if batch != self.lengths.shape[0]:
            raise ValueError(f"batch size changed from {self.lengths.shape[0]} to {batch} inside one cache")
        keep = self._step_keep = self._keep(codes)
        self._step_codes = codes
        lengths = self.lengths.tolist()  # the step's one host read
        self.group_step_slots, self.group_visible, self.step_masks = [], [], []
        self.step_slots_read = 0
        single = len(self.group_rows) == 1
        for group, rows in enumerate(self.group_rows):
            row_lengths = lengths if single else [lengths[b] for b in self.group_row_lists[group]]
            group_lengths = self.lengths if single else self.lengths[rows]
            visible = max(row_lengths) + q
            if visible > self.group_capacity[group]:
                self.group_capacity[group] = self.block_size * -(-visible // self.block_size)
                for layer in self.layers:
                    layer.grow(group, self.group_capacity[group])
            self.group_step_slots.append(group_lengths[:, None] + torch.arange(q, device=device))
            self.group_visible.append(visible)
            self.step_slots_read += len(row_lengths) * visible
            equal = min(row_lengths) == max(row_lengths)
            group_keep = keep if single else keep[rows]
            self.step_masks.append(None if q == 1 and equal else self._mask(group_lengths, group_keep, visible))

    def plan_static_step(self, codes: torch.Tensor) -> None:
        """:meth:`plan_step` for one token per row with static shapes: no host read, no data-dependent branch (what
        ``torch.compile(fullgraph=True)`` and CUDA graphs need). Every row attends over the whole buffer, masked to
        its own entries, so the cache must have one row group whose capacity covers the sequence (start tokens +
        L; see ``MergeARForCausalLM.new_cache(static=True)``) and must have run one :meth:`plan_step` (the prompt)."""
        keep = self._step_keep = self._keep(codes)
        self._step_codes = codes
        capacity = self.group_capacity[0]
        self.group_step_slots, self.group_visible = [self.lengths[:, None]], [capacity]
        self.step_masks = [self._mask(self.lengths, keep, capacity)]
        self.step_slots_read = codes.shape[0] * capacity

    def finish_static_step(self) -> None:
        """:meth:`finish_step` of a :meth:`plan_static_step` (in place, no host read)."""
        self.lengths.add_(self._step_keep.sum(1))
        self._end_step()

    @staticmethod
    def _mask(lengths: torch.Tensor, keep: torch.Tensor, visible: int) -> torch.Tensor:
        """[rows, 1, q, visible]: stored past entries, kept earlier entries of this step, and the query itself."""
        q, device = keep.shape[1], keep.device
        slot_ids = torch.arange(visible, device=device)
        if q == 1:  # a query sees the stored entries and itself: slots 0..lengths[b]
            return (slot_ids <= lengths[:, None])[:, None, None, :]
        past = slot_ids[None, None, :] < lengths[:, None, None]  # [rows, 1, S]
        rel = slot_ids[None, :] - lengths[:, None]  # [rows, S] index within this step
        in_step = (rel >= 0) & (rel < q)
        key_kept = keep.gather(1, rel.clamp(0, q - 1)) & in_step  # [rows, S]
        query = torch.arange(q, device=device)[None, :, None]
        causal = rel[:, None, :] <= query
        own = rel[:, None, :] == query
        return (past | (in_step[:, None, :] & causal & (key_kept[:, None, :] | own)))[:, None]

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """Store this step's keys/values of layer ``layer_idx`` and attend (SDPA) over each group's visible
        entries with the mask :meth:`plan_step` made; query/key/value [B, heads, q, head_dim] -> [B, heads, q, dv]."""
        layer = self.layers[layer_idx]
        if not layer.is_initialized:
            layer.lazy_initialization(key, value)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        if len(self.group_rows) == 1:
            k, v = layer.write(0, key, value)
            return sdpa(query, k, v, attn_mask=self.step_masks[0])
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        for group, rows in enumerate(self.group_rows):
            k, v = layer.write(group, key[rows], value[rows])
            out[rows] = sdpa(query[rows], k, v, attn_mask=self.step_masks[group])
        return out

    def _keep(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, q] bool: which new tokens get stored (start tokens, and codes seen neither before nor earlier in the
        step); all of them for a dense cache. One gather in the seen table, no host read once it exists."""
        if not self.prune:
            return torch.ones_like(codes, dtype=torch.bool)
        seen_before = self._seen_table(codes).gather(1, self._columns(codes))
        if codes.shape[1] > 1:
            seen_before = seen_before | duplicate_mask(codes)
        return ~seen_before | (codes < 0)

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
            # stable compaction of each group's step slots; entries past the new length are garbage
            for group, rows in enumerate(self.group_rows):
                lengths, group_keep = self.lengths[rows], keep[rows]
                slot_ids = torch.arange(self.group_capacity[group], device=keep.device).expand(len(rows), -1)
                rel = slot_ids - lengths[:, None]
                in_step = (rel >= 0) & (rel < q)
                dropped = in_step & ~group_keep.gather(1, rel.clamp(0, q - 1))
                order = torch.sort(dropped.long(), dim=1, stable=True).indices
                for layer in self.layers:
                    layer.compact(group, order)
        self.lengths = self.lengths + keep.sum(1)
        self._end_step()

    def _end_step(self) -> None:
        """What every step ends with: the step's codes are now stored (first occurrences) or were already."""
        if self.prune:
            self.seen.scatter_(1, self._columns(self._step_codes), True)
        self.seen_tokens += self._step_codes.shape[1]
        self._step_keep = self._step_codes = None
        self.group_step_slots, self.step_masks = [], []

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
            for rows, keys, values in zip(self.group_row_lists, layer.key_groups, layer.value_groups):
                per_slot = (keys.shape[1] * keys.shape[3] * keys.element_size()) + (
                    values.shape[1] * values.shape[3] * values.element_size()
                )
                slots = keys.shape[0] * keys.shape[2] if allocated else int(self.lengths[rows].sum())
                total += per_slot * slots
        return total

    def reset(self) -> None:
        """Forget everything (buffers are dropped, not zeroed: the next step allocates them anew)."""
        self.seen_tokens = 0
        self.lengths = self.seen = None
        self.group_rows, self.group_row_lists, self.group_capacity = [], [], []
        for layer in self.layers:
            layer.key_groups, layer.value_groups, layer.is_initialized = [], [], False
            layer.keys = layer.values = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.lengths is not None:
            self.lengths = self.lengths.index_select(0, beam_idx.to(self.lengths.device))
        if self.seen is not None:
            self.seen = self.seen.index_select(0, beam_idx.to(self.seen.device))
