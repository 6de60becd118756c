"""Optional dependencies: imported only by the features that need them, with one clear error when absent.

timm (and through it torchvision) serves the linear probe's optimizer / schedule and the fine-tuning recipe
(RandAugment, Mixup, layer-wise decay). torchvision wheels are built for one torch release, so a torch newer than
the newest torchvision breaks ``import timm``; the tokenizer, the generators, the pipeline and the metrics need
neither, and a torch that satisfies the lower bound is never replaced to please them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

VISION_INSTALL = "pip install 'mergevq_hf[vision]'"


class MissingDependencyError(ImportError):
    """An optional dependency a feature needs is not installed (or does not load); the message names the install."""


def import_timm(what: str) -> ModuleType:
    """``timm``, or :class:`MissingDependencyError` saying that ``what`` needs it and how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError as error:
        raise MissingDependencyError(f"{what} needs timm: {VISION_INSTALL} ({error})") from error
    except RuntimeError as error:  # "operator torchvision::nms does not exist": torchvision built for another torch
        import torch

        raise MissingDependencyError(
            f"{what} needs timm, whose torchvision does not load beside torch {torch.__version__} ({error}); install "
            "the torchvision release built for this torch"
        ) from error


__all__ = ["MissingDependencyError", "VISION_INSTALL", "import_timm"]
