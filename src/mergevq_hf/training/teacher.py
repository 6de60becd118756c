"""Frozen teacher for MergeVQ's representation alignment (paper Eq. 12): DINOv2's pooled CLS token.

The official code feeds the teacher a weakly augmented 224x224 view normalised with the ImageNet mean / std
and takes ``pooler_output`` (the final-LayerNorm CLS token). :func:`load_teacher` wraps any
``transformers.AutoModel`` checkpoint the same way, taking pixels in [-1, 1] at any size.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..image_utils import check_images

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_TEACHER = "facebook/dinov2-base"


class FrozenTeacher(nn.Module):
    """Frozen feature model: pixels [B, 3, H, W] in [-1, 1] -> pooled CLS features [B, hidden] (float32).

    The input is mapped to [0, 1], resized to ``image_size`` x ``image_size`` (bicubic, antialiased) unless it
    already has that size, normalised with ``image_mean`` / ``image_std`` and run without gradients. The
    module stays in eval mode and its parameters never require gradients; it is meant to live outside the
    modules whose state is checkpointed.
    """

    def __init__(
        self, model: nn.Module, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD, image_size=224
    ):
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size={image_size!r}; allowed: a positive integer")
        mean = torch.as_tensor(image_mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(image_std, dtype=torch.float32).flatten()
        if mean.numel() != 3 or std.numel() != 3 or not bool((std > 0).all()):
            raise ValueError(f"image_mean / image_std must be 3 values (std > 0), got {image_mean!r} / {image_std!r}")
        self.model = model
        self.image_size = image_size
        self.register_buffer("image_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", std.view(1, 3, 1, 1), persistent=False)
        self.model.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        return super().train(False)

    @property
    def hidden_size(self) -> int | None:
        return getattr(getattr(self.model, "config", None), "hidden_size", None)

    def preprocess(self, pixel_values: torch.Tensor) -> torch.Tensor:
        check_images("pixel_values", pixel_values)
        x = (pixel_values.float() + 1.0) / 2.0
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        return (x - self.image_mean) / self.image_std

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(pixel_values)
        param = next(self.model.parameters(), None)
        if param is not None:
            x = x.to(device=param.device, dtype=param.dtype)
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state[:, 0]
        return pooled.float()


def _processor_mean_std(name_or_path: str | os.PathLike, **kwargs) -> tuple:
    """image_mean / image_std from the checkpoint's preprocessor_config.json, else the ImageNet defaults."""
    from transformers.image_processing_utils import ImageProcessingMixin

    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(str(name_or_path), **kwargs)
    except (OSError, ValueError):
        return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    mean = config.get("image_mean") or IMAGENET_DEFAULT_MEAN
    std = config.get("image_std") or IMAGENET_DEFAULT_STD
    return tuple(mean), tuple(std)


def load_teacher(
    name_or_path: str | os.PathLike = DEFAULT_TEACHER,
    image_size: int = 224,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **from_pretrained_kwargs,
) -> FrozenTeacher:
    """Load ``transformers.AutoModel.from_pretrained(name_or_path)`` (default ``facebook/dinov2-base``), freeze
    it and wrap it as a :class:`FrozenTeacher` (pixels in [-1, 1], any size -> pooled CLS [B, hidden]).
    Normalisation comes from the checkpoint's image-processor config when it has one, else ImageNet's."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(name_or_path), **from_pretrained_kwargs)
    hub_keys = ("revision", "cache_dir", "token", "local_files_only")
    hub_kwargs = {k: v for k, v in from_pretrained_kwargs.items() if k in hub_keys}
    mean, std = _processor_mean_std(name_or_path, **hub_kwargs)
    teacher = FrozenTeacher(model, mean, std, image_size=image_size)
    if device is not None:
        teacher.to(device=device)
    if dtype is not None:  # the normalisation buffers stay float32
        teacher.model.to(dtype=dtype)
    return teacher


__all__ = ["DEFAULT_TEACHER", "FrozenTeacher", "load_teacher"]
