"""Inception Score: a classifier's logits on generated images, scored by torchmetrics' ``InceptionScore``.

The FID network the package ships (``fid.InceptionFeatures``) has no logits, so the Inception Score needs a network
given by the user, found as ``path`` or ``$MERGEVQ_IS_WEIGHTS`` (nothing is downloaded), that maps images
[B, 3, 299, 299] in the FID network's input range ([-1, 1), i.e. ``(p - 128) / 128`` of 8-bit pixels p) to logits
[B, C], e.g. the TF Inception-v3 with its 1008-way head that ADM's evaluator uses:

* a safetensors file of :class:`~mergevq_hf.evaluation.inception_net.FIDInceptionV3` with its linear head
  (``fc.weight`` / ``fc.bias`` beside the FID network's keys): built as our own module, no TorchScript;
* a TorchScript archive holding those tensors: read the same way, without TorchScript;
* any other TorchScript classifier: loaded with ``torch.jit.load`` while torch still has it (legacy; torch
  deprecates TorchScript, so convert such a network to the first form).

Without one, :func:`find_logits_network` returns ``None`` and the evaluation reports ``inception_score: null``
with :data:`NO_NETWORK_MESSAGE`.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
from torchmetrics.image.inception import InceptionScore

from ..weights import find_weights_file
from .fid import inception_input, load_inception_network, module_device

ENV_WEIGHTS = "MERGEVQ_IS_WEIGHTS"
DEFAULT_SPLITS = 10
NO_NETWORK_MESSAGE = (
    "Inception Score skipped: it needs a classifier with logits (the offline FID network has none); pass "
    f"--is-weights FILE or set ${ENV_WEIGHTS} to an Inception-v3 with logits (safetensors of FIDInceptionV3 with its "
    "fc head, or TorchScript) that maps [B, 3, 299, 299] images in [-1, 1) to logits"
)


def _load_classifier(path: Path) -> nn.Module:
    """The classifier of the module docstring's three forms (safetensors, TorchScript tensors, TorchScript)."""
    try:
        network = load_inception_network(path, check_hash=False)
    except ValueError as error:
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{str(path)!r} is neither a safetensors file nor a TorchScript file ({error})") from error
        network = None  # a TorchScript archive, but not of the Inception-v3 tensors: some other classifier
    if network is not None:
        if not network.num_classes:
            raise ValueError(f"{str(path)!r} holds the FID network without a logits head (no fc.weight / fc.bias)")
        return network
    if not hasattr(torch.jit, "load"):
        raise ValueError(f"{str(path)!r} is a TorchScript classifier and this torch has no TorchScript")
    try:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript
            warnings.filterwarnings("ignore", r".*torch\.jit\.load.*deprecated")  # Deprecation- or FutureWarning
            return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a TorchScript file ({error})") from error


class LogitsNetwork(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] -> logits [B, C] (float64) of the classifier at ``path`` (see the module
    docstring), with the FID network's preprocessing (8-bit rounding, TF1 bilinear resize to 299, input range
    [-1, 1))."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.network = _load_classifier(Path(path))
        self.weights_path = Path(path)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LogitsNetwork:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.network(inception_input(images, self.device))
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != images.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the Inception Score network must return logits [B, C], got {got}")
        return logits.double()

    @property
    def device(self) -> torch.device:
        return module_device(self.network)


def find_logits_network(path: str | os.PathLike | None = None) -> LogitsNetwork | None:
    """The user's Inception Score network (``path``, else ``$MERGEVQ_IS_WEIGHTS``), or ``None`` when neither is
    set. A path that names no file raises ``FileNotFoundError``."""
    found = find_weights_file(path, ENV_WEIGHTS, [], what="Inception Score weights")
    return None if found is None else LogitsNetwork(found)


def inception_score(logits: torch.Tensor, splits: int = DEFAULT_SPLITS, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the Inception Score (torchmetrics) over ``splits`` parts of ``logits`` [N, C]. torchmetrics
    shuffles the samples before splitting; the shuffle is seeded here (``seed``, on a forked RNG that leaves the
    caller's untouched), so a result is reproducible."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a [N, C] tensor, got {got}")
    if isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= logits.shape[0]:
        raise ValueError(f"splits must be an int in [1, N] = [1, {logits.shape[0]}], got {splits!r}")
    with warnings.catch_warnings():  # "will save all extracted features in buffer": we pass logits once
        warnings.filterwarnings("ignore", r".*save all extracted features", UserWarning)
        metric = InceptionScore(feature=nn.Identity(), splits=splits, sync_on_compute=False)  # logits: all of them
    metric.update(logits.detach().double().cpu())
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.filterwarnings("ignore", r".*degrees of freedom", UserWarning)  # std of one split
        mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0
