"""Reconstruction metrics of a tokenizer on held-out images: PSNR, codebook usage (more in later work)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..image_utils import psnr
from ..models.tokenizer import MergeVQModel


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of the codebook used and the perplexity of the code histogram."""
    counts = torch.bincount(indices.flatten().cpu(), minlength=codebook_size).float()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).float().mean()), "codebook_perplexity": float(entropy.exp())}


@torch.no_grad()
def evaluate_reconstruction(
    tokenizer: MergeVQModel, batches: Iterable[dict], num_tokens: int | None = None, max_batches: int | None = None
) -> dict[str, float]:
    """Mean PSNR (dB, images clamped to [-1, 1]) and codebook statistics over ``batches`` of
    {"pixel_values": [B, 3, H, W] in [-1, 1]}."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    scores, indices, count = [], [], 0
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        pixels = batch["pixel_values"].to(device)
        enc = tokenizer.encode(pixels, num_tokens=num_tokens)
        recon = tokenizer.decode(tokenizer.unmerge(enc.indices, enc.source))
        scores.append(psnr(recon, pixels).cpu())
        indices.append(enc.indices.cpu())
        count += pixels.shape[0]
    tokenizer.train(was_training)
    if not scores:
        raise ValueError("evaluate_reconstruction got no batches")
    result = {"psnr": float(torch.cat(scores).mean()), "num_images": count}
    result.update(codebook_usage(torch.cat([i.flatten() for i in indices]), 2**tokenizer.config.code_dim))
    return result
