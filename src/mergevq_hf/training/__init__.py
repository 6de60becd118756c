"""Training: data streaming and augmentation (losses, discriminator, EMA and loops live beside it)."""

from .data import (
    DataConfig,
    RobustImageStream,
    decode_image,
    load_image_stream,
    make_dataloader,
    open_image,
)

__all__ = [
    "DataConfig",
    "RobustImageStream",
    "decode_image",
    "load_image_stream",
    "make_dataloader",
    "open_image",
]
