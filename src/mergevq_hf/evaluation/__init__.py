from .fid import (
    FIDAccumulator,
    InceptionFeatures,
    fid_from_features,
    find_inception_weights,
    frechet_distance,
    resolve_inception_weights,
)
from .metrics import ssim
from .reconstruction import codebook_usage, compute_rfid, evaluate_reconstruction

__all__ = [
    "FIDAccumulator",
    "InceptionFeatures",
    "codebook_usage",
    "compute_rfid",
    "evaluate_reconstruction",
    "fid_from_features",
    "find_inception_weights",
    "frechet_distance",
    "resolve_inception_weights",
    "ssim",
]
