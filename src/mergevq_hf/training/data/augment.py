"""Augmentations, seeded by a ``torch.Generator``: random-resized crop + flip for ``pixel_values``, and the weak /
strong views of the alignment loss (Eq. 12; the strong view adds colour jitter, grayscale, blur, solarisation)."""

from __future__ import annotations

import functools
import math
import random
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...image_utils import pil_to_tensor
from ...optional import import_timm

if TYPE_CHECKING:  # annotations only: config.py imports this module (policy check), not the other way round
    from .config import DataConfig


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _coin(generator: torch.Generator, p: float) -> bool:
    return torch.rand((), generator=generator).item() < p


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[float, float, float, float]:
    """Crop box (left, top, right, bottom) of a random area fraction in ``scale`` and aspect ratio in ``ratio``
    (log-uniform); 10 tries, then the largest centred box within ``ratio`` (as torchvision's RandomResizedCrop)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(generator, *scale)
        aspect = math.exp(_uniform(generator, *log_ratio))
        w = math.sqrt(target_area * aspect)
        h = math.sqrt(target_area / aspect)
        if 0 < w <= width and 0 < h <= height:
            left = _uniform(generator, 0.0, width - w)
            top = _uniform(generator, 0.0, height - h)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, width / ratio[0]
    elif in_ratio > ratio[1]:
        w, h = height * ratio[1], height
    else:
        w, h = width, height
    left, top = (width - w) / 2, (height - h) / 2
    return left, top, left + w, top + h


def _crop_to_unit_tensor(image: Image.Image, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """RGB crop ``box`` resized (bicubic, antialiased) to ``size`` -> [3, size, size] float in [0, 1]."""
    crop = image.resize((size, size), Image.BICUBIC, box=box)
    return (pil_to_tensor(crop) + 1) / 2


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """[3, H, W] -> [1, H, W] luma (ITU-R 601, as PIL and torchvision)."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def _rotate_hue(x: torch.Tensor, turns: float) -> torch.Tensor:
    """Hue rotation by ``turns`` of a full turn, as a rotation of the chroma plane in YIQ space."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    cos, sin = math.cos(2 * math.pi * turns), math.sin(2 * math.pi * turns)
    rotate = x.new_tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    matrix = torch.linalg.inv(to_yiq) @ rotate @ to_yiq
    return torch.einsum("ij,jhw->ihw", matrix, x)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [3, H, W], kernel about 10% of the side (odd), reflect padding."""
    if min(x.shape[-2:]) < 2:
        return x
    radius = max(1, min(int(0.05 * x.shape[-1]), min(x.shape[-2:]) - 1))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[0]
    out = F.pad(x.unsqueeze(0), (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return out.squeeze(0)


def strong_augment(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    jitter_p: float = 0.8,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    solarize_p: float = 0.2,
) -> torch.Tensor:
    """BYOL/DINO-style photometric augmentation of [3, H, W] in [0, 1] with torch ops (no torchvision):
    colour jitter in random order, random grayscale, Gaussian blur, solarisation."""
    if _coin(generator, jitter_p):
        for op in torch.randperm(4, generator=generator).tolist():
            if op == 0:
                x = x * _uniform(generator, 1 - brightness, 1 + brightness)
            elif op == 1:
                mean = _grayscale(x).mean()
                x = (x - mean) * _uniform(generator, 1 - contrast, 1 + contrast) + mean
            elif op == 2:
                gray = _grayscale(x)
                x = (x - gray) * _uniform(generator, 1 - saturation, 1 + saturation) + gray
            else:
                x = _rotate_hue(x, _uniform(generator, -hue, hue))
            x = x.clamp(0, 1)
    if _coin(generator, grayscale_p):
        x = _grayscale(x).expand(3, -1, -1).contiguous()
    if _coin(generator, blur_p):
        x = _gaussian_blur(x, _uniform(generator, *blur_sigma)).clamp(0, 1)
    if _coin(generator, solarize_p):
        x = torch.where(x >= 0.5, 1 - x, x)
    return x


@functools.lru_cache(maxsize=8)
def rand_augment_policy(policy: str, resolution: int):
    """timm's RandAugment transform for a policy string such as ``"rand-m9-mstd0.5-inc1"`` (PIL in, PIL out)."""
    if not isinstance(policy, str) or not policy.startswith("rand"):
        raise ValueError(
            f"rand_augment={policy!r}; allowed: None or a timm RandAugment policy like 'rand-m9-mstd0.5-inc1'"
        )
    import_timm("rand_augment")
    from timm.data.auto_augment import rand_augment_transform

    hparams = {"translate_const": int(resolution * 0.45), "img_mean": (124, 116, 104)}
    try:
        transform = rand_augment_transform(policy, hparams)
    except (AssertionError, ValueError, KeyError) as error:
        raise ValueError(f"rand_augment={policy!r} is not a timm RandAugment policy ({error})") from None
    for op in transform.ops:
        # timm maps the top / bottom magnitudes to posterize(0 bits), which Pillow >= 11 rejects ("bits must be
        # between or equal to 1 and 8"; older Pillow returned a black image): keep at least 1 bit.
        if "Posterize" in op.name:
            op.aug_fn = functools.partial(_posterize_at_least_one_bit, op.aug_fn)
    return transform


def _posterize_at_least_one_bit(posterize, image: Image.Image, bits: int, **kwargs) -> Image.Image:
    return posterize(image, max(1, int(bits)), **kwargs)


def _rand_augment(image: Image.Image, config: DataConfig, generator: torch.Generator) -> Image.Image:
    """RandAugment with the example's own randomness: timm draws from Python's ``random`` (and numpy's), so both
    are seeded from ``generator`` for this call and restored afterwards."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    saved_random, saved_numpy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        return rand_augment_policy(config.rand_augment, config.resolution)(image)
    finally:
        random.setstate(saved_random)
        np.random.set_state(saved_numpy)


def transform_example(image: Image.Image, config: DataConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """RGB PIL image -> {"pixel_values"[, "view_weak", "view_strong"]} tensors in [-1, 1] (``pixel_values`` from
    the RandAugment-ed image when ``config.rand_augment`` is set; the alignment views from the original)."""
    source = image
    if config.rand_augment is not None:
        image = _rand_augment(image, config, generator)
    width, height = image.size
    if config.crop == "center":
        pixel_values = pil_to_tensor(image, config.resolution)
    else:
        box = random_resized_crop_box(width, height, config.crop_scale, config.crop_ratio, generator)
        pixel_values = _crop_to_unit_tensor(image, box, config.resolution) * 2 - 1
    if config.random_flip and _coin(generator, 0.5):
        pixel_values = pixel_values.flip(-1)
    out = {"pixel_values": pixel_values}
    if config.alignment_views:
        image = source
        views = []
        for strong in (False, True):
            box = random_resized_crop_box(width, height, config.view_crop_scale, config.crop_ratio, generator)
            view = _crop_to_unit_tensor(image, box, config.aug_resolution)
            if _coin(generator, 0.5):
                view = view.flip(-1)
            if strong:
                view = strong_augment(view, generator)
            views.append(view * 2 - 1)
        out["view_weak"], out["view_strong"] = views
    return out


def augmentation_seed(seed: int, process_index: int, worker_id: int, epoch: int) -> int:
    """Independent 63-bit seed for each (seed, process, dataloader worker, epoch)."""
    state = np.random.SeedSequence([seed, process_index, worker_id, epoch]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
