"""Per-image similarity metrics of reconstructions: SSIM (PSNR lives in :mod:`mergevq_hf.image_utils`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..image_utils import check_images

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return (window / window.sum()).to(device=device, dtype=dtype)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM [B] of two [B, C, H, W] batches in [-1, 1] after clamping, on the [0, 1] scale (as
    :func:`~mergevq_hf.image_utils.psnr`).

    Wang et al. (2004): Gaussian window 11 x 11 with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population
    (biased) local statistics; the SSIM map is taken over the valid region (no padding), averaged over pixels and
    then channels. Equal to ``skimage.metrics.structural_similarity(x, y, channel_axis=-1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1.0)`` per image. Needs H, W >= 11.
    Computed in float32 (float64 inputs stay float64); differentiable.
    """
    check_images("a", a, channels=None)
    check_images("b", b, channels=None)
    if a.shape != b.shape:
        raise ValueError(f"a and b shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.shape[2] < SSIM_WINDOW or a.shape[3] < SSIM_WINDOW:
        raise ValueError(f"SSIM needs H, W >= {SSIM_WINDOW} (its window), got {a.shape[2]}x{a.shape[3]}")
    dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    a = (a.to(dtype).clamp(-1, 1) + 1) / 2
    b = (b.to(dtype).clamp(-1, 1) + 1) / 2
    batch, channels = a.shape[:2]
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, dtype, a.device)
    # One separable depthwise Gaussian blur of the five maps a, b, a^2, b^2, ab (valid region only).
    stacked = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    groups = stacked.shape[1]
    stacked = F.conv2d(stacked, window.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    stacked = F.conv2d(stacked, window.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    mu_a, mu_b, aa, bb, ab = stacked.split(channels, dim=1)
    var_a = aa - mu_a * mu_a
    var_b = bb - mu_b * mu_b
    cov = ab - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return (numerator / denominator).flatten(2).mean(-1).mean(-1).view(batch)
