"""Invariants of token merging, source tracking and the merge schedules."""

from __future__ import annotations

import pytest
import torch

from conftest import random_pixels
from mergevq_hf import MergeVQConfig, MergeVQModel
from mergevq_hf.models.tokenizer.token_merging import (
    bipartite_soft_matching,
    group_sizes,
    merge_owner,
    merge_schedule,
    merge_tokens,
    merge_weighted_average,
    source_to_matrix,
)

# the official schedules (fixture meta.json of gr_small, L=256, 12 blocks)
OFFICIAL = {144: [12, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 5], 64: [29, 22, 21, 19, 18, 16, 15, 13, 12, 10, 9, 8]}


@pytest.mark.parametrize("num_tokens", sorted(OFFICIAL))
def test_linear_schedule_is_official(num_tokens):
    assert merge_schedule(256, num_tokens, 12, "linear") == OFFICIAL[num_tokens]


@pytest.mark.parametrize("kind", ["linear", "square"])
@pytest.mark.parametrize("num_positions", [64, 256, 1024])
def test_schedules_remove_exactly_l_minus_k(kind, num_positions):
    for num_tokens in range(1, num_positions + 1):
        schedule = merge_schedule(num_positions, num_tokens, 12, kind)
        assert sum(schedule) == num_positions - num_tokens
        t = num_positions + 1
        for r in schedule:  # never more than half of the mergeable tokens in one block
            assert 0 <= r <= (t - 1) // 2
            t -= r


def test_square_schedule_decreases():
    schedule = merge_schedule(1024, 256, 12, "square")
    assert all(a >= b for a, b in zip(schedule, schedule[1:]))
    assert schedule[0] > 3 * schedule[-1] > 0


def test_unknown_schedule_rejected():
    with pytest.raises(ValueError, match="cubic"):
        merge_schedule(64, 16, 6, "cubic")


def test_cls_never_merged_and_owner_tracks_merges():
    """merge_owner (group ids) must agree with merging the dense one-hot source matrix; the first
    token (CLS) keeps size 1 and index 0 through repeated merges."""
    batch, t, dim = 3, 33, 8
    x = torch.randn(batch, t, dim)
    owner = torch.arange(t).expand(batch, -1)
    dense = torch.eye(t).expand(batch, t, t)  # row = current token, col = original position
    size = None
    for r in (8, 6, 4, 3):
        plan = bipartite_soft_matching(torch.randn(batch, x.shape[1], dim), r, protect_first=True)
        assert not (plan.src_idx == 0).any()
        owner = merge_owner(owner, plan, x.shape[1])
        dense = merge_tokens(dense, plan, reduce="amax")
        x, size = merge_weighted_average(x, size, plan)
        assert torch.equal(source_to_matrix(owner, x.shape[1]), dense)
        assert (size[:, 0, 0] == 1).all() and (owner[:, 0] == 0).all()
        assert torch.equal(size[..., 0].long(), group_sizes(owner, x.shape[1]))


def test_weighted_average_is_size_weighted():
    x = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]])
    size = torch.tensor([[[1.0], [3.0], [1.0], [1.0]]])
    plan = bipartite_soft_matching(torch.tensor([[[1.0, 0], [0, 1], [0, 1.0], [1, 0]]]), 1, protect_first=True)
    merged, new_size = merge_weighted_average(x, size, plan)
    # A = positions {0 (protected), 2}, B = {1, 3}: token 2 (metric [0,1]) merges into token 1 (size 3)
    assert merged.shape[1] == 3
    torch.testing.assert_close(merged[0, :, 0], torch.tensor([0.0, (3 * 1.0 + 2.0) / 4, 3.0]))
    torch.testing.assert_close(new_size[0, :, 0], torch.tensor([1.0, 4.0, 1.0]))


@pytest.mark.parametrize("preset", ["tiny", "tiny-r"])
def test_encoder_partition_invariants_for_every_k(preset):
    model = MergeVQModel(MergeVQConfig.from_preset(preset)).eval()
    pixels = random_pixels(2, model.config.resolution)
    num_positions = model.config.num_positions
    assert model.min_num_tokens == 1
    with torch.no_grad():
        for num_tokens in range(1, num_positions + 1):
            enc = model.encode(pixels, num_tokens=num_tokens)
            assert enc.indices.shape == (2, num_tokens) and enc.latent.shape[1] == num_tokens
            assert enc.source.shape == (2, num_positions)
            assert enc.source.min() >= 0 and enc.source.max() < num_tokens
            matrix = model.source_matrix(enc.source, num_tokens)
            assert (matrix.sum(1) == 1).all(), "every position belongs to exactly one group"
            sizes = group_sizes(enc.source, num_tokens)
            assert (sizes >= 1).all(), "every kept token covers at least one position"
            assert (sizes.sum(1) == num_positions).all()
            assert torch.equal(sizes, enc.token_sizes)
    full = model.encode(pixels, num_tokens=num_positions)
    assert torch.equal(full.source, torch.arange(num_positions).expand(2, -1))


def test_proportional_attention_changes_output_only_when_sizes_differ():
    from mergevq_hf.models.tokenizer.modeling_mergevq import Attention

    attn = Attention(16, 4)
    x = torch.randn(2, 7, 16)
    plain, _ = attn(x, None)
    ones, _ = attn(x, torch.ones(2, 7, 1))
    torch.testing.assert_close(plain, ones)
    sizes = torch.tensor([1.0, 5, 1, 2, 1, 1, 9]).view(1, 7, 1).expand(2, -1, -1)
    weighted, _ = attn(x, sizes)
    assert (weighted - plain).abs().max() > 1e-3

    pixels = random_pixels(2, 32)
    # layer scale 0.5 instead of 1e-5 so attention visibly moves the features of a random model
    on = MergeVQModel(MergeVQConfig.from_preset("tiny", layer_scale_init=0.5)).eval()
    off = MergeVQModel(MergeVQConfig.from_preset("tiny", layer_scale_init=0.5, proportional_attention=False)).eval()
    off.load_state_dict(on.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(on.encode(pixels, num_tokens=64).latent, off.encode(pixels, num_tokens=64).latent)
        assert (on.encode(pixels, num_tokens=9).latent - off.encode(pixels, num_tokens=9).latent).abs().max() > 1e-4
