"""Reconstruction metrics of a tokenizer on held-out images: PSNR, SSIM, LPIPS, rFID and codebook usage."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..image_utils import psnr
from ..models.tokenizer import MergeVQModel
from .fid import InceptionFeatures, fid_metric, module_device
from .metrics import ssim


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of the codebook used and the perplexity of the code histogram."""
    counts = torch.bincount(indices.flatten().cpu(), minlength=codebook_size).float()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).float().mean()), "codebook_perplexity": float(entropy.exp())}


def _check_metric(name: str, metric) -> None:
    if metric is not None and not callable(metric):
        raise TypeError(f"{name} must be None or a callable module, got {type(metric).__name__}")


@torch.no_grad()
def evaluate_reconstruction(
    tokenizer: MergeVQModel,
    batches: Iterable[dict],
    num_tokens: int | None = None,
    max_batches: int | None = None,
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    fid: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Reconstruction metrics over ``batches`` of {"pixel_values": [B, 3, H, W] in [-1, 1]} (at most
    ``max_batches``), each image encoded with ``num_tokens`` tokens, unmerged and decoded.

    Always: "psnr" (dB) and "ssim" (see :func:`~mergevq_hf.evaluation.metrics.ssim`), both per-image means on
    the [0, 1] scale of images clamped to [-1, 1]; "num_images"; "codebook_usage" and "codebook_perplexity".
    With ``lpips`` (an LPIPS module, e.g. ``LPIPS.from_pretrained()``, returning one distance per image): "lpips",
    its mean. With ``fid`` (an :class:`~mergevq_hf.evaluation.fid.InceptionFeatures`, or any module mapping
    images to [B, D] features): "rfid", the FID between the reconstructions and the originals (needs >= 2
    images; statistics are accumulated in O(D^2) memory). Reconstructions and originals are clamped to [-1, 1]
    before LPIPS and the features, and moved to each metric module's device.
    """
    _check_metric("lpips", lpips)
    _check_metric("fid", fid)
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)):
        raise TypeError(f"max_batches must be None or an int, got {max_batches!r}")
    was_training = tokenizer.training
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    lpips_device = module_device(lpips, device)
    fid_device = module_device(fid, device)
    psnrs, ssims, lpips_values, indices, count = [], [], [], [], 0
    fid_stats = None
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            pixels = batch["pixel_values"].to(device)
            enc = tokenizer.encode(pixels, num_tokens=num_tokens)
            recon = tokenizer.decode(tokenizer.unmerge(enc.indices, enc.source))
            psnrs.append(psnr(recon, pixels).cpu())
            ssims.append(ssim(recon, pixels).float().cpu())
            indices.append(enc.indices.cpu())
            count += pixels.shape[0]
            if lpips is None and fid is None:
                continue
            recon_c, pixels_c = recon.float().clamp(-1, 1), pixels.float().clamp(-1, 1)
            if lpips is not None:
                values = lpips(recon_c.to(lpips_device), pixels_c.to(lpips_device))
                if not isinstance(values, torch.Tensor) or values.numel() != pixels.shape[0]:
                    got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
                    raise ValueError(f"lpips must return one distance per image ({pixels.shape[0]}), got {got}")
                lpips_values.append(values.detach().float().reshape(-1).cpu())
            if fid is not None:
                fake = fid(recon_c.to(fid_device))
                real = fid(pixels_c.to(fid_device))
                if fid_stats is None:
                    if not isinstance(real, torch.Tensor) or real.ndim != 2:
                        got = tuple(real.shape) if isinstance(real, torch.Tensor) else type(real).__name__
                        raise ValueError(f"fid must map images to [B, D] features, got {got}")
                    fid_stats = fid_metric(real.shape[1])
                fid_stats.update(real.cpu(), real=True)
                fid_stats.update(fake.cpu(), real=False)
    finally:
        tokenizer.train(was_training)
    if not psnrs:
        raise ValueError("evaluate_reconstruction got no batches")
    result = {"psnr": float(torch.cat(psnrs).mean()), "num_images": count}
    result.update(codebook_usage(torch.cat([i.flatten() for i in indices]), 2**tokenizer.config.code_dim))
    result["ssim"] = float(torch.cat(ssims).mean())
    if lpips is not None:
        result["lpips"] = float(torch.cat(lpips_values).mean())
    if fid is not None:
        if count < 2:
            raise ValueError(f"rFID needs at least 2 images, got {count}")
        result["rfid"] = float(fid_stats.compute())
    return result


def compute_rfid(
    tokenizer,
    batches: Iterable[dict],
    num_tokens: int | None = None,
    inception: InceptionFeatures | None = None,
    max_batches: int | None = None,
) -> float:
    """Reconstruction FID: FID between the tokenizer's reconstructions (encode with ``num_tokens``, unmerge,
    decode) and the original images of ``batches`` ({"pixel_values": [B, 3, H, W] in [-1, 1]}).
    ``inception`` defaults to ``InceptionFeatures()``. Meaningful FID needs thousands of images (50k is the
    usual protocol); small sets give a biased, larger value."""
    if inception is None:
        inception = InceptionFeatures()
    return evaluate_reconstruction(tokenizer, batches, num_tokens=num_tokens, max_batches=max_batches, fid=inception)[
        "rfid"
    ]
