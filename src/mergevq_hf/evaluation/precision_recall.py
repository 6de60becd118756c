"""Improved precision and recall (Kynkäänniemi et al., 2019), as ADM's evaluator computes them.

Each feature set estimates its manifold as the union of balls around its samples, each ball reaching the sample's
k-th nearest neighbour in the same set (k = 3). Precision = the fraction of generated samples inside the real
manifold (are the samples realistic?); recall = the fraction of real samples inside the generated manifold (is the
real variety covered?). A point lies inside when its distance to some sample is at most that sample's radius
(ties count as inside). torchmetrics has no k-NN precision/recall; this is the only copy in the package.
"""

from __future__ import annotations

import torch

DEFAULT_K = 3


def _check_features(name: str, features) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim != 2 or features.shape[1] < 1:
        raise ValueError(f"{name} must be [N, D], got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return features.detach().to(torch.float64)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact pairwise squared Euclidean distances [len(a), len(b)] in float64 (no |a|^2 + |b|^2 - 2ab round-off
    games: the difference is formed directly, a chunk of rows at a time)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()


def manifold_radii(features: torch.Tensor, k: int = DEFAULT_K, chunk_size: int = 1024) -> torch.Tensor:
    """Squared distance [N] from each sample to its k-th nearest neighbour in the same set (itself excluded)."""
    features = _check_features("features", features)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < features.shape[0]:
        raise ValueError(f"k must be an int in [1, N - 1] = [1, {features.shape[0] - 1}], got {k!r}")
    radii = []
    for start in range(0, features.shape[0], chunk_size):
        distances = _squared_distances(features[start : start + chunk_size], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # the 0 to itself is the first value
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Fraction of ``points`` within ``radii`` of at least one of ``centres``."""
    inside = []
    for start in range(0, points.shape[0], chunk_size):
        distances = _squared_distances(points[start : start + chunk_size], centres)
        inside.append((distances <= radii).any(dim=1))
    return torch.cat(inside).double().mean()


def precision_recall(
    real_features: torch.Tensor, fake_features: torch.Tensor, k: int = DEFAULT_K, chunk_size: int = 1024
) -> dict[str, float]:
    """``{"precision", "recall"}`` of ``fake_features`` [M, D] against ``real_features`` [N, D] with k-NN
    manifolds (N, M > k). Memory: ``chunk_size`` x max(N, M) distances at a time; float64 throughout."""
    real = _check_features("real_features", real_features)
    fake = _check_features("fake_features", fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    real_radii = manifold_radii(real, k, chunk_size)
    fake_radii = manifold_radii(fake, k, chunk_size)
    return {
        "precision": float(_coverage(fake, real, real_radii, chunk_size)),
        "recall": float(_coverage(real, fake, fake_radii, chunk_size)),
    }
