"""Lookup-free quantisation (LFQ): sign quantisation of each of ``code_dim`` channels.

The codebook is {-1, 1}^code_dim (2^code_dim codes). Index of a code = sum_j bit_j * 2^j with channel 0
the least significant bit and bit_j = [z_j > 0] (z_j == 0 counts as negative, as in the official code).

The entropy loss (MAGVIT-v2 style) uses the softmax over all codes of logits 2 z.c / T. Because the
logits are a sum over channels, that softmax factorises into independent per-bit Bernoullis
p(bit_j = 1) = sigmoid(4 z_j / T). The per-token entropy is then a sum of bit entropies, and the entropy
of the batch-mean distribution is computed exactly by streaming over chunks of the codebook
(bounded memory, gradients through activation checkpointing) instead of materialising B*K*2^code_dim floats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def codes_to_indices(bits: torch.Tensor) -> torch.Tensor:
    """Bits or ±1 codes [..., D] (positive = 1) -> indices [...] long, channel 0 least significant."""
    weights = 2 ** torch.arange(bits.shape[-1], device=bits.device, dtype=torch.long)
    return ((bits > 0).long() * weights).sum(-1)


def indices_to_codes(indices: torch.Tensor, code_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Indices [...] -> ±1 codes [..., code_dim]."""
    shifts = torch.arange(code_dim, device=indices.device, dtype=torch.long)
    bits = (indices[..., None] >> shifts) & 1
    return bits.to(dtype) * 2 - 1


def quantize(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """latent [..., D] -> (quantized [..., D] exactly ±1 with a straight-through gradient, indices [...])."""
    hard = torch.where(latent > 0, torch.ones_like(latent), -torch.ones_like(latent))
    quantized = latent + (hard - latent).detach()
    return quantized, codes_to_indices(hard)


def commitment_loss(latent: torch.Tensor) -> torch.Tensor:
    """MSE between the latent and its (detached) quantisation."""
    hard = torch.where(latent > 0, torch.ones_like(latent), -torch.ones_like(latent))
    return F.mse_loss(latent, hard.detach())


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _bit_log_probs(latent: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    logit = 4.0 * _at_least_fp32(latent) / temperature
    return F.logsigmoid(logit), F.logsigmoid(-logit)


def _combination_log_probs(log_p1: torch.Tensor, log_p0: torch.Tensor) -> torch.Tensor:
    """[N, d] bit log-probs -> [N, 2^d] log-prob of every combination of those d bits (LSB first)."""
    d = log_p1.shape[-1]
    bits = (torch.arange(2**d, device=log_p1.device)[:, None] >> torch.arange(d, device=log_p1.device)) & 1
    bits = bits.to(log_p1.dtype)
    return log_p1 @ bits.T + log_p0 @ (1 - bits).T


def _chunk_entropy(low: torch.Tensor, high_chunk: torch.Tensor, log_n: float) -> torch.Tensor:
    # log q(code) for codes = high * 2^d_low + low, q = batch mean of the per-token distributions
    log_joint = high_chunk[:, :, None] + low[:, None, :]  # [N, C_high, 2^d_low]
    log_q = torch.logsumexp(log_joint, dim=0) - log_n
    return -(log_q.exp() * log_q).sum()


def entropy_terms(
    latent: torch.Tensor, temperature: float = 0.01, chunk_elements: int = 1 << 24
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (per-token entropy averaged over tokens, entropy of the token-averaged distribution) of
    softmax(2 z.C^T / T) over all 2^D codes, in memory bounded by ``chunk_elements`` floats.

    latent: [..., D]; every leading position is one token.
    """
    flat = latent.reshape(-1, latent.shape[-1])
    num, dim = flat.shape
    log_p1, log_p0 = _bit_log_probs(flat, temperature)
    per_sample = -(log_p1.exp() * log_p1 + log_p0.exp() * log_p0).sum(-1).mean()

    d_low = dim // 2
    low = _combination_log_probs(log_p1[:, :d_low], log_p0[:, :d_low])  # [N, 2^d_low]
    high = _combination_log_probs(log_p1[:, d_low:], log_p0[:, d_low:])  # [N, 2^d_high]
    chunk = max(1, chunk_elements // (num * low.shape[1]))
    log_n = math.log(num)
    codebook = low.new_zeros(())
    for start in range(0, high.shape[1], chunk):
        part = high[:, start : start + chunk]
        if torch.is_grad_enabled() and latent.requires_grad:
            codebook = codebook + checkpoint(_chunk_entropy, low, part, log_n, use_reentrant=False)
        else:
            codebook = codebook + _chunk_entropy(low, part, log_n)
    return per_sample, codebook


def entropy_terms_naive(latent: torch.Tensor, temperature: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the same two entropies with the full [N, 2^D] softmax (small D only)."""
    flat = _at_least_fp32(latent.reshape(-1, latent.shape[-1]))
    codebook = indices_to_codes(torch.arange(2 ** flat.shape[-1], device=flat.device), flat.shape[-1], flat.dtype)
    log_probs = torch.log_softmax(2 * flat @ codebook.T / temperature, dim=-1)
    per_sample = -(log_probs.exp() * log_probs).sum(-1).mean()
    avg = log_probs.exp().mean(0)
    return per_sample, -(avg * torch.log(avg.clamp_min(1e-30))).sum()
