"""Robust image decoding: any stored form (PIL, bytes, path, ``{"bytes", "path"}``) -> a loaded PIL image, with a
decompression-bomb guard; corrupt data raises one of ``DECODE_ERRORS`` for the caller to count and skip."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from ...image_utils import to_rgb

logger = logging.getLogger(__name__)

DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageTooLargeError(ValueError):
    """The image has more pixels than ``max_image_pixels`` (decompression-bomb guard)."""


def open_image(value: Any, max_image_pixels: int | None = None) -> Image.Image:
    """Open and fully load an image in its ORIGINAL mode (EXIF orientation applied).

    ``value``: PIL image, ``{"bytes": ..., "path": ...}`` (bytes preferred), raw bytes, or a path. Raises
    ``ImageTooLargeError`` above ``max_image_pixels``, ``OSError``/``SyntaxError``/... for truncated or corrupt
    data, ``TypeError`` for a value that is not an image at all.
    """
    if isinstance(value, Image.Image):
        image = value
    else:
        data = value
        if isinstance(value, dict):
            data = value.get("bytes") or value.get("path")
            if data is None:
                raise ValueError("image value has neither 'bytes' nor 'path'")
        if isinstance(data, (str, Path)):
            path = str(data)
            if Path(path).exists():
                data = Path(path).read_bytes()
            else:  # remote path from a streamed dataset (hf://, https://, zip://...)
                from datasets.utils.file_utils import xopen

                with xopen(path, "rb") as f:
                    data = f.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"cannot decode an image from {type(value).__name__}; expected a PIL image, raw bytes, a path or a "
                "dict with 'bytes'/'path'"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
            image = Image.open(io.BytesIO(data))
    if max_image_pixels is not None and image.width * image.height > max_image_pixels:
        raise ImageTooLargeError(f"image of {image.width}x{image.height} pixels exceeds max_image_pixels")
    image.load()  # decodes now: truncation / corruption raises here, inside the caller's try
    try:
        orientation = image.getexif().get(Image.ExifTags.Base.Orientation)
        if orientation is not None and orientation != 1:
            image = ImageOps.exif_transpose(image)
    except Exception as error:  # a broken EXIF block does not make the pixels unusable
        logger.debug("ignoring unreadable EXIF orientation: %s", error)
    return image


def decode_image(value: Any, max_image_pixels: int | None = None) -> Image.Image:
    """PIL image / ``{"bytes", "path"}`` / raw bytes / path -> loaded RGB PIL image (grayscale, CMYK, palette,
    RGBA, 16-bit ... converted with ``image_utils.to_rgb``). Corrupt data raises (see ``open_image``)."""
    return to_rgb(open_image(value, max_image_pixels))
