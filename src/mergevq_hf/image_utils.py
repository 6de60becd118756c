"""Image files, PNG grids, PSNR and the image-batch check. The pixel conversions themselves (RGB, resize + crop,
[-1, 1] <-> uint8 / PIL) live in the tokenizer's image processor (``models/tokenizer/image_processing_mergevq.py``,
which must load on its own as Hub remote code) and are re-exported here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from .models.tokenizer.image_processing_mergevq import (  # noqa: F401  (re-exported)
    MergeVQImageProcessor,
    center_crop_resize,
    pil_to_tensor,
    tensor_to_pil,
    tensor_to_uint8,
    to_rgb,
    uint8_to_tensor,
)

ASSETS = Path(__file__).parent / "assets"
EXAMPLE_IMAGE = ASSETS / "astronaut.png"


def check_images(
    name: str, x, channels: int | None = 3, min_size: int = 1, floating: bool = True, what: str = ""
) -> None:
    """The one check of an image batch: ``TypeError`` unless ``x`` is a torch.Tensor (floating point when
    ``floating``), ``ValueError`` unless it is [B, C, H, W] with C = ``channels`` (any when None) and
    H, W >= ``min_size``. Messages name the value and what is allowed; ``what`` says who needs ``min_size``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point image tensor in [-1, 1], got dtype {x.dtype}")
    shape = f"[B, {'C' if channels is None else channels}, H, W]"
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise ValueError(f"{name} must be {shape}, got shape {tuple(x.shape)}")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f"{name} is {x.shape[2]}x{x.shape[3]}; {what or 'this'} needs H, W >= {min_size}")


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An image file -> [3, H, W] in [-1, 1] (center-cropped to ``size`` when given): the image processor's
    conversion (``pil_to_tensor``)."""
    with Image.open(path) as image:
        return pil_to_tensor(image, size)


def make_grid(images: torch.Tensor | Sequence[Image.Image], ncols: int, padding: int = 2) -> Image.Image:
    """Tile images (tensor [B, 3, H, W] in [-1, 1] or PIL list) row-major into one PIL image."""
    tiles = tensor_to_pil(images) if isinstance(images, torch.Tensor) else list(images)
    if not tiles:
        raise ValueError("make_grid needs at least one image")
    width, height = tiles[0].size
    nrows = -(-len(tiles) // ncols)
    grid = Image.new("RGB", (ncols * (width + padding) + padding, nrows * (height + padding) + padding), "white")
    for i, tile in enumerate(tiles):
        row, col = divmod(i, ncols)
        grid.paste(tile, (padding + col * (width + padding), padding + row * (height + padding)))
    return grid


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of two [B, C, H, W] batches in [-1, 1] after clamping, on the [0, 1] scale."""
    a, b = (a.float().clamp(-1, 1) + 1) / 2, (b.float().clamp(-1, 1) + 1) / 2
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)
