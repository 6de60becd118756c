"""Image <-> tensor conversion and PNG grids (one home for the package's pixel handling)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

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


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, CMYK, RGBA, I;16 ...) -> RGB (alpha composited on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I"):
        array = np.asarray(image, dtype=np.float64)
        array = 255 * (array - array.min()) / max(array.max() - array.min(), 1)
        image = Image.fromarray(array.astype(np.uint8))
    return image.convert("RGB")


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (bicubic) and take the central ``size`` x ``size`` crop."""
    width, height = image.size
    scale = size / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def pil_to_tensor(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """PIL image -> float tensor [3, H, W] in [-1, 1] (RGB, optionally center-cropped to ``size``)."""
    image = to_rgb(image)
    if size is not None:
        image = center_crop_resize(image, size)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    with Image.open(path) as image:
        return pil_to_tensor(image, size)


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] (clamped)."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(a) for a in tensor_to_uint8(images)]


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
