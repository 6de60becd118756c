"""Merge-ratio samplers (paper A.3, official cycle) and the step-drop schedule."""

from __future__ import annotations

import math

import pytest
import torch

from mergevq_hf.training.merge_sampling import MergeRatioSampler
from mergevq_hf.training.schedule import step_drop_lr


def test_official_gaussian_candidates_and_cycle():
    # official G+R config: gaussian-6 around K=144 -> candidates [121, 144, 169, 196, 225, 256]
    sampler = MergeRatioSampler(kind="official", base=12, num_candidates=6, num_positions=256)
    assert sampler.candidates() == [121, 144, 169, 196, 225, 256]
    probs = sampler.probabilities()
    raw = [math.exp(-((i - 1) ** 2) / 0.5) + 0.05 for i in range(6)]
    assert probs == pytest.approx([r / sum(raw) for r in raw])
    ks = [int(sampler.sample(2, step=s)[0]) for s in range(100)]
    # deterministic cycle by step: each candidate for a share of 100 steps equal to its probability (+-1 step)
    for k, p in zip(sampler.candidates(), probs):
        assert abs(ks.count(k) - 100 * p) <= 1.5
    assert ks == sorted(ks)  # the cycle walks the cumulative distribution in order


@pytest.mark.parametrize(
    "kind,base,direction,expected",
    [
        ("exponential", 16, -1, [256, 225, 196, 169, 144, 121]),
        ("exponential", 6, 1, [36, 49, 64, 81, 100, 121]),
        ("gaussian", 12, 1, [121, 144, 169, 196, 225, 256]),
        ("fixed", 12, 1, [144]),
    ],
)
def test_paper_samplers_match_their_distribution(kind, base, direction, expected):
    sampler = MergeRatioSampler(kind=kind, base=base, direction=direction, num_positions=256)
    assert sampler.candidates() == expected
    draws = sampler.sample(20000, generator=torch.Generator().manual_seed(0))
    for k, p in zip(sampler.candidates(), sampler.probabilities()):
        assert abs((draws == k).float().mean().item() - p) < 0.015
    if kind == "exponential":  # P(T=k) proportional to exp(-lambda k)
        probs = sampler.probabilities()
        assert probs[1] / probs[0] == pytest.approx(math.exp(-2.0))


def test_sampler_rejects_bad_values():
    with pytest.raises(ValueError, match="kind"):
        MergeRatioSampler(kind="uniform")
    with pytest.raises(ValueError, match="base"):
        MergeRatioSampler(kind="fixed", base=20, num_positions=256)


def test_step_drop_lr():
    assert [step_drop_lr(1.0, s, [10, 20]) for s in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
