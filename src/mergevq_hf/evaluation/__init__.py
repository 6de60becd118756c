"""Evaluation as the paper measures: reconstruction (PSNR, SSIM, LPIPS, rFID, codebook usage), generation (gFID,
Inception Score, precision / recall) and representation (linear probing)."""

from .evaluate_modules import EVALUATE_MODULES, evaluate_module_path, load_metric
from .fid import (
    GaussianStatistics,
    InceptionFeatures,
    PrecomputedFeatures,
    fid_from_features,
    fid_metric,
    find_inception_weights,
    frechet_distance,
    resolve_inception_weights,
)
from .metrics import ssim
from .reconstruction import codebook_usage, compute_rfid, evaluate_reconstruction

__all__ = [
    "EVALUATE_MODULES",
    "GaussianStatistics",
    "InceptionFeatures",
    "PrecomputedFeatures",
    "codebook_usage",
    "compute_rfid",
    "evaluate_module_path",
    "evaluate_reconstruction",
    "fid_from_features",
    "fid_metric",
    "find_inception_weights",
    "frechet_distance",
    "load_metric",
    "resolve_inception_weights",
    "ssim",
]

