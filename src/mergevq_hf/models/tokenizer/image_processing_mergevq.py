"""``MergeVQImageProcessor``: images <-> the tokenizer's pixel tensors, the package's one home for that conversion.

Pre-processing: any PIL mode -> RGB (alpha composited on white, 16-bit rescaled), short side resized to ``size``
(bicubic), central ``size`` x ``size`` crop, values mapped to [-1, 1] -> ``pixel_values`` [B, 3, size, size].
Post-processing: decoded [B, 3, H, W] tensors in [-1, 1] -> PIL images, a numpy array [B, H, W, 3] in [0, 1]
or a tensor [B, 3, H, W] in [0, 1].

Saved beside the tokenizer (``preprocessor_config.json``), so ``AutoImageProcessor.from_pretrained(folder)`` works
where mergevq_hf is imported (and as Hub remote code with ``trust_remote_code=True`` where it is not). Imports
nothing from the rest of the package (this folder loads on its own).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

OUTPUT_TYPES = ("pil", "np", "pt")


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


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] (clamped)."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


def uint8_to_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] (numpy or torch) -> float [B, 3, H, W] in [-1, 1]: the inverse of ``tensor_to_uint8``."""
    array = torch.as_tensor(array)
    if array.dtype != torch.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [B, H, W, 3], got {tuple(array.shape)} {array.dtype}")
    return array.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(a) for a in tensor_to_uint8(images)]


class MergeVQImageProcessor(BaseImageProcessor):
    """Resize + center-crop + [-1, 1] for the MergeVQ tokenizer, and decoded tensors back to images.

    Args:
        size: side of the square the tokenizer reads (its config's ``resolution``).
        do_center_crop: False only resizes to ``size`` x ``size`` (aspect ratio not kept).

    Example:
        >>> processor = MergeVQImageProcessor(size=256)
        >>> pixel_values = processor(images=[pil_image], return_tensors="pt").pixel_values  # [1, 3, 256, 256]
        >>> processor.postprocess(tokenizer.decode(codes), output_type="pil")
    """

    model_input_names = ["pixel_values"]

    def __init__(self, size: int = 256, do_center_crop: bool = True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size={size!r}; allowed: an int >= 1 (the tokenizer's resolution)")
        self.size = size
        self.do_center_crop = bool(do_center_crop)

    def preprocess(self, images, size: int | None = None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """PIL images (or uint8 arrays [H, W, 3] / [H, W]) -> ``BatchFeature(pixel_values=[B, 3, S, S])`` in [-1, 1]."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}; allowed: images, size, return_tensors")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r}; allowed: 'pt' (or None, the same)")
        size = self.size if size is None else size
        if isinstance(images, (Image.Image, np.ndarray)):
            images = [images]
        if not isinstance(images, (list, tuple)) or not images:
            raise TypeError(f"images must be a PIL image, a uint8 array or a non-empty list of them, got {images!r}")
        tensors = []
        for image in images:
            if isinstance(image, np.ndarray):
                if image.dtype != np.uint8 or image.ndim not in (2, 3):
                    raise ValueError(
                        f"an array image must be uint8 [H, W] or [H, W, C], got {image.dtype} {image.shape}"
                    )
                image = Image.fromarray(image)
            if not isinstance(image, Image.Image):
                raise TypeError(f"images must be PIL images or uint8 arrays, got {type(image).__name__}")
            if self.do_center_crop:
                tensors.append(pil_to_tensor(image, size))
            else:
                tensors.append(pil_to_tensor(to_rgb(image).resize((size, size), Image.BICUBIC)))
        return BatchFeature({"pixel_values": torch.stack(tensors)})

    def postprocess(self, images: torch.Tensor, output_type: str = "pil"):
        """Decoded [B, 3, H, W] in [-1, 1] -> a list of PIL images (``"pil"``), a float array [B, H, W, 3] in
        [0, 1] (``"np"``) or a tensor [B, 3, H, W] in [0, 1] (``"pt"``); values are clamped first."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}; allowed: {OUTPUT_TYPES}")
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise TypeError(f"images must be a [B, 3, H, W] tensor in [-1, 1], got {type(images).__name__}")
        if output_type == "pil":
            return tensor_to_pil(images)
        images = (images.clamp(-1, 1) + 1) / 2
        return images.permute(0, 2, 3, 1).float().cpu().numpy() if output_type == "np" else images
