"""``DataConfig``: where the training images come from and how each example is built (checked on creation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .augment import rand_augment_policy

CROP_MODES = ("random_resized", "center")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r} of type {type(value).__name__}")


def _check_range(name: str, value: Any, low: float, high: float | None) -> tuple[float, float]:
    allowed = f"a pair (lo, hi) with {low} < lo <= hi" + (f" <= {high}" if high is not None else "")
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {allowed}, got {value!r}") from None
    if not (low < lo <= hi and (high is None or hi <= high)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return lo, hi


@dataclass
class DataConfig:
    """Where the images come from and how each example is built.

    ``dataset`` is a Hub id (default ImageNet-1k, gated: log in or set ``HF_TOKEN``), a local folder holding
    ``*.parquet`` files (searched recursively; ``train``/``test`` in the file or folder names select the split)
    or an imagefolder (class subfolders, optionally under ``train/``, ``test/``), or a single ``.parquet`` file.

    ``crop="random_resized"`` samples a crop of ``crop_scale`` of the area with aspect ratio in ``crop_ratio``
    (use ``crop_scale=(1, 1), crop_ratio=(1, 1)`` for "short side resize + random square crop");
    ``crop="center"`` resizes the short side and takes the centre (evaluation). ``random_flip`` flips
    ``pixel_values`` horizontally with probability 0.5. The alignment views use ``view_crop_scale`` and always flip.
    """

    dataset: str = "ILSVRC/imagenet-1k"
    split: str = "train"
    image_column: str = "image"
    label_column: str | None = "label"
    streaming: bool = True
    shuffle: bool = True
    shuffle_buffer: int = 1000
    # Shards read at once to fill the shuffle buffer (datasets' max_buffer_input_shards). 1 reads them one after
    # another without reader threads, which also skips datasets 5.x's 5 s pause at the end of each parquet pass.
    shuffle_input_shards: int = 10
    seed: int = 0
    resolution: int = 256
    crop: str = "random_resized"
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    random_flip: bool = True
    alignment_views: bool = True
    aug_resolution: int = 224
    view_crop_scale: tuple[float, float] = (0.4, 1.0)
    # Images with more pixels than this are skipped (decompression-bomb guard; None disables our check, PIL's own
    # limit of 2 * Image.MAX_IMAGE_PIXELS still raises and is counted as corrupt).
    max_image_pixels: int | None = 89_478_485
    # Parquet only: one shard per row group instead of per file (more shards for processes x workers).
    reshard: bool = False
    # timm RandAugment policy applied to pixel_values' source image (fine-tuning, A.4), e.g. "rand-m9-mstd0.5-inc1";
    # None = off.
    rand_augment: str | None = None
    # Extra keyword arguments for datasets.load_dataset (revision, token, cache_dir, data_files, ...).
    load_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("dataset", "split", "image_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise TypeError(f"{name} must be a non-empty str, got {value!r}")
        if self.label_column is not None and (not isinstance(self.label_column, str) or not self.label_column):
            raise TypeError(f"label_column must be a non-empty str or None, got {self.label_column!r}")
        for name in ("streaming", "shuffle", "random_flip", "alignment_views", "reshard"):
            _check_bool(name, getattr(self, name))
        _check_int("shuffle_buffer", self.shuffle_buffer, 1)
        _check_int("shuffle_input_shards", self.shuffle_input_shards, 1)
        _check_int("seed", self.seed, 0)
        _check_int("resolution", self.resolution, 1)
        _check_int("aug_resolution", self.aug_resolution, 1)
        if self.max_image_pixels is not None:
            _check_int("max_image_pixels", self.max_image_pixels, 1)
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {self.crop!r}")
        self.crop_scale = _check_range("crop_scale", self.crop_scale, 0.0, 1.0)
        self.view_crop_scale = _check_range("view_crop_scale", self.view_crop_scale, 0.0, 1.0)
        self.crop_ratio = _check_range("crop_ratio", self.crop_ratio, 0.0, None)
        if self.rand_augment is not None:
            rand_augment_policy(self.rand_augment, self.resolution)  # a bad policy string fails here, not in a worker
        if not isinstance(self.load_kwargs, dict):
            raise TypeError(f"load_kwargs must be a dict, got {self.load_kwargs!r}")
