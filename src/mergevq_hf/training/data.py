"""Training data: ``datasets`` streaming (ImageNet or a local folder), robust decoding and augmentations.

Pipeline (one process of ``num_processes``)::

    load_image_stream(config, rank, world)   datasets.IterableDataset, sharded per process, buffer-shuffled,
                                             image column kept undecoded ({"bytes", "path"})
    RobustImageStream(stream, config, rank)  torch IterableDataset: decodes in our code (corrupt files skipped and
                                             counted, odd modes converted to RGB and counted), then augments with
                                             a per-process/worker/epoch seeded torch.Generator
    make_dataloader(...)                     torch DataLoader over the above (default collate)

Each example is ``{"pixel_values": [3,R,R], "view_weak": [3,A,A], "view_strong": [3,A,A], "label": int}`` with
pixels in [-1, 1] (R = ``resolution``, A = ``aug_resolution``; the views are skipped when
``alignment_views=False``, the label is -1 where the dataset has none). The two views feed the alignment loss
(Eq. 12): the teacher sees the weak view, the student the strong one; the training code converts them to the
teacher's own normalisation.

``build_local_dataset`` writes a small real dataset (photo crops from ``skimage.data`` or the sklearn handwritten
digits) as parquet or imagefolder, for tests and examples that must run offline.
"""

from __future__ import annotations

import inspect
import io
import logging
import math
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from datasets.distributed import split_dataset_by_node
from PIL import Image, ImageOps

from ..image_utils import pil_to_tensor, to_rgb

logger = logging.getLogger(__name__)

CROP_MODES = ("random_resized", "center")
LOCAL_KINDS = ("photos", "digits")
LOCAL_FORMATS = ("parquet", "imagefolder")
# Photos that scikit-image ships inside its wheel (no pooch download); label = index in this tuple.
PHOTO_NAMES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


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
        if not isinstance(self.load_kwargs, dict):
            raise TypeError(f"load_kwargs must be a dict, got {self.load_kwargs!r}")


# --------------------------------------------------------------------------------------------------- loading


def _load_arguments(config: DataConfig) -> tuple[tuple, dict]:
    """datasets.load_dataset arguments: Hub id as is; a local folder/file gets the parquet or imagefolder builder."""
    path = Path(config.dataset).expanduser()
    kwargs = dict(config.load_kwargs)
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"dataset {config.dataset!r} is a file; only a single .parquet file is supported")
        kwargs.setdefault("data_files", {config.split: str(path)})
        return ("parquet",), kwargs
    if path.is_dir():
        if any(path.rglob("*.parquet")):
            kwargs.setdefault("data_dir", str(path))
            return ("parquet",), kwargs
        kwargs.setdefault("data_dir", str(path))
        return ("imagefolder",), kwargs
    if config.dataset.startswith((".", "/", "~")):
        raise ValueError(f"dataset {config.dataset!r} looks like a local path but does not exist")
    return (config.dataset,), kwargs


def load_image_stream(config: DataConfig, process_index: int = 0, num_processes: int = 1) -> datasets.IterableDataset:
    """The ``datasets`` stream of this process: split by node, buffer-shuffled, image column undecoded.

    Every process must use the same ``config.seed`` so that all see the same shard order and the split is
    disjoint. Returns a ``datasets.IterableDataset`` whose examples hold ``config.image_column`` as
    ``{"bytes", "path"}`` (where the column is an ``Image`` feature) and ``config.label_column``.
    """
    _check_int("num_processes", num_processes, 1)
    if isinstance(process_index, bool) or not isinstance(process_index, int) or not 0 <= process_index < num_processes:
        raise ValueError(f"process_index must be an int in [0, {num_processes}), got {process_index!r}")
    args, kwargs = _load_arguments(config)
    dataset = datasets.load_dataset(*args, split=config.split, streaming=config.streaming, **kwargs)
    if not config.streaming:  # map-style (downloaded and cached): stream it so the rest is the same
        num_shards = max(1, min(len(dataset), 64 * num_processes))
        dataset = dataset.to_iterable_dataset(num_shards=num_shards)
    features = dataset.features
    if features is not None:
        wanted = [config.image_column] + ([config.label_column] if config.label_column else [])
        missing = [name for name in wanted if name not in features]
        if missing:
            hint = " (set label_column=None for a dataset without labels)" if config.label_column in missing else ""
            raise ValueError(
                f"dataset {config.dataset!r} split {config.split!r} has no column(s) {missing}; "
                f"available: {list(features)}{hint}"
            )
        dataset = dataset.select_columns(wanted)
        if isinstance(features[config.image_column], datasets.Image):
            dataset = dataset.cast_column(config.image_column, datasets.Image(decode=False))
    if config.reshard:
        dataset = dataset.reshard()
    if num_processes > 1:
        dataset = split_dataset_by_node(dataset, rank=process_index, world_size=num_processes)
    if config.shuffle:
        kwargs = {"seed": config.seed, "buffer_size": config.shuffle_buffer}
        if "max_buffer_input_shards" in inspect.signature(dataset.shuffle).parameters:  # datasets >= 5
            kwargs["max_buffer_input_shards"] = config.shuffle_input_shards
        dataset = dataset.shuffle(**kwargs)
    return dataset


# -------------------------------------------------------------------------------------------------- decoding


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


# ----------------------------------------------------------------------------------------------- augmentation


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


def transform_example(image: Image.Image, config: DataConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """RGB PIL image -> {"pixel_values"[, "view_weak", "view_strong"]} tensors in [-1, 1]."""
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


# ------------------------------------------------------------------------------------------------ the stream


def _new_stats() -> dict[str, Any]:
    return {
        "seen": 0,
        "yielded": 0,
        "skipped_corrupt": 0,
        "skipped_too_large": 0,
        "skipped_missing": 0,
        "converted_mode": {},
    }


class RobustImageStream(torch.utils.data.IterableDataset):
    """Decode + augment a stream of raw examples; never stops on a bad image.

    ``dataset``: any iterable of dicts (normally ``load_image_stream(...)``). Images that cannot be decoded
    (truncated, corrupt, not an image), exceed ``max_image_pixels`` or are missing (None) are skipped and counted
    in ``stats``; images in another mode than RGB are converted and counted per original mode, e.g.
    ``{"seen": 10, "yielded": 9, "skipped_corrupt": 1, "skipped_too_large": 0, "skipped_missing": 0,
    "converted_mode": {"L": 1}}``. A value of the wrong type (a non-image column) raises ``TypeError``.
    ``stats`` counts what THIS process iterated: with DataLoader workers (``num_workers > 0``) each worker keeps
    its own copy, so the main-process ``stats`` stay at zero; skips are also logged (first 10 per worker).

    Augmentation randomness comes from a ``torch.Generator`` seeded by (seed, process_index, worker id, epoch), so
    a run is reproducible; call ``set_epoch`` before each epoch for new shard order and new augmentations.
    """

    def __init__(self, dataset: Any, config: DataConfig, process_index: int = 0, num_processes: int = 1):
        super().__init__()
        if not isinstance(config, DataConfig):
            raise TypeError(f"config must be a DataConfig, got {type(config).__name__}")
        _check_int("num_processes", num_processes, 1)
        _check_int("process_index", process_index, 0)
        self.dataset = dataset
        self.config = config
        self.process_index = process_index
        self.num_processes = num_processes
        self.epoch = 0
        self.stats = _new_stats()

    def set_epoch(self, epoch: int) -> None:
        _check_int("epoch", epoch, 0)
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _label(self, example: dict) -> int:
        column = self.config.label_column
        value = example.get(column) if column is not None else None
        if value is None:
            return -1
        try:
            return int(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"label column {column!r} must hold ints (or None), got {value!r}; set label_column=None to ignore it"
            ) from None

    def _raw_examples(self, worker: Any) -> Iterator[dict]:
        """This worker's raw examples. ``datasets`` gives each DataLoader worker whole shards and idles the workers
        beyond the shard count (an imagefolder streams as ONE shard); then every worker reads the (undecoded, cheap)
        stream and keeps one example in ``num_workers`` instead, so all workers decode."""
        num_shards = getattr(self.dataset, "num_shards", None)
        if (
            worker is None
            or worker.num_workers == 1
            or not isinstance(self.dataset, datasets.IterableDataset)
            or num_shards >= worker.num_workers * self.num_processes
        ):
            yield from self.dataset
            return
        if worker.id == 0:
            logger.info(
                "%d dataloader workers x %d processes > %d shards: workers split the stream by example",
                worker.num_workers,
                self.num_processes,
                num_shards,
            )
        stream = split_dataset_by_node(self.dataset, rank=worker.id, world_size=worker.num_workers)
        for batch in stream.iter(batch_size=1):  # .iter() does not apply datasets' own worker sharding
            yield {key: values[0] for key, values in batch.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        generator = torch.Generator().manual_seed(
            augmentation_seed(self.config.seed, self.process_index, worker_id, self.epoch)
        )
        stats = self.stats
        skipped = 0
        for example in self._raw_examples(worker):
            stats["seen"] += 1
            value = example.get(self.config.image_column)
            if value is None or (isinstance(value, dict) and not value.get("bytes") and not value.get("path")):
                stats["skipped_missing"] += 1
                skipped += 1
                continue
            try:
                image = open_image(value, self.config.max_image_pixels)
                mode = image.mode
                image = to_rgb(image)
            except ImageTooLargeError as error:
                stats["skipped_too_large"] += 1
                reason = error
            except _DECODE_ERRORS as error:
                stats["skipped_corrupt"] += 1
                reason = error
            else:
                if mode != "RGB":
                    stats["converted_mode"][mode] = stats["converted_mode"].get(mode, 0) + 1
                out = transform_example(image, self.config, generator)
                out["label"] = self._label(example)
                stats["yielded"] += 1
                yield out
                continue
            skipped += 1
            if skipped <= 10:
                where = value.get("path") if isinstance(value, dict) else None
                logger.warning(
                    "skipping image #%d%s: %s: %s",
                    stats["seen"],
                    f" ({where})" if where else "",
                    type(reason).__name__,
                    reason,
                )


def make_dataloader(
    config: DataConfig,
    batch_size: int,
    process_index: int = 0,
    num_processes: int = 1,
    num_workers: int = 0,
    **dataloader_kwargs: Any,
) -> torch.utils.data.DataLoader:
    """DataLoader over this process's share of the stream (default collate: tensors stacked, labels a tensor).

    The loader is already sharded per process: do NOT pass it to ``accelerator.prepare`` (accelerate would shard
    it again, or dispatch batches from process 0); move batches to ``accelerator.device`` yourself. Processes may
    get slightly different numbers of examples, so train for a fixed number of steps (call
    ``loader.dataset.set_epoch(epoch)`` and iterate again when a pass ends). Workers get whole shards where there
    are enough (``reshard=True`` makes one per parquet row group), otherwise every example in ``num_workers``.
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("num_workers", num_workers, 0)
    stream = load_image_stream(config, process_index=process_index, num_processes=num_processes)
    dataset = RobustImageStream(stream, config, process_index=process_index, num_processes=num_processes)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, **dataloader_kwargs)


# ------------------------------------------------------------------------------------------ local datasets


def _photo_examples(size: int, num_per_image: int, rng: np.random.Generator) -> tuple[list, list[int], list[str]]:
    try:
        from skimage import data as skdata
    except ImportError as error:
        raise ImportError(
            "kind='photos' needs scikit-image: pip install scikit-image (or pip install 'mergevq_hf[data]')"
        ) from error
    images, labels = [], []
    for label, name in enumerate(PHOTO_NAMES):
        photo = to_rgb(Image.fromarray(np.asarray(getattr(skdata, name)())))
        width, height = photo.size
        for _ in range(num_per_image):
            side = rng.uniform(0.2, 0.7) * min(width, height)
            left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
            images.append(photo.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side)))
            labels.append(label)
    return images, labels, list(PHOTO_NAMES)


def _digit_examples(size: int, num_per_image: int, rng: np.random.Generator) -> tuple[list, list[int], list[str]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "kind='digits' needs scikit-learn: pip install scikit-learn (or pip install 'mergevq_hf[data]')"
        ) from error
    digits = load_digits()
    images, labels = [], []
    for digit in range(10):
        indices = np.flatnonzero(digits.target == digit)[:num_per_image]
        for index in indices:
            pixels = np.round(digits.images[index] * (255 / 16)).astype(np.uint8)  # 8x8, 0..16 -> 0..255
            images.append(Image.fromarray(pixels, mode="L").resize((size, size), Image.BICUBIC))
            labels.append(digit)
    return images, labels, [f"digit_{d}" for d in range(10)]


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_local_dataset(
    kind: str,
    output: str | Path,
    *,
    size: int = 32,
    num_per_image: int = 64,
    format: str = "parquet",
    seed: int = 0,
    holdout_fraction: float = 0.1,
    num_shards: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a small REAL image dataset from pictures shipped inside pip packages; returns {split: count}.

    ``kind="photos"``: ``num_per_image`` random square crops (side 20-70% of the short side) of each photo in
    ``PHOTO_NAMES`` (scikit-image), resized to ``size``; label = photo index. ``kind="digits"``: the sklearn
    handwritten digits (8x8, grayscale), upsampled to ``size``, at most ``num_per_image`` per digit; label = digit.
    ``holdout_fraction`` of each class goes to ``test`` (the rest to ``train``).

    ``format="parquet"``: ``output/data/{split}-0000i-of-0000n.parquet`` with an ``Image`` column and a
    ``ClassLabel`` label; ``format="imagefolder"``: ``output/{split}/{label:03d}_{name}/{index:05d}.png``. Both load
    with ``DataConfig(dataset=str(output), split=...)``.
    """
    if kind not in LOCAL_KINDS:
        raise ValueError(f"kind must be one of {LOCAL_KINDS}, got {kind!r}")
    if format not in LOCAL_FORMATS:
        raise ValueError(f"format must be one of {LOCAL_FORMATS}, got {format!r}")
    _check_int("size", size, 1)
    _check_int("num_per_image", num_per_image, 1)
    _check_int("seed", seed, 0)
    _check_int("num_shards", num_shards, 1)
    if isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, (int, float)):
        raise TypeError(f"holdout_fraction must be a float in [0, 1), got {holdout_fraction!r}")
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
    output = Path(output)
    ours = [output / "data", output / "train", output / "test"]
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{output} is not empty; pass overwrite=True (--overwrite) to replace the dataset")
        for path in ours:
            if path.exists():
                shutil.rmtree(path)

    rng = np.random.default_rng(seed)
    make = _photo_examples if kind == "photos" else _digit_examples
    images, labels, class_names = make(size, num_per_image, rng)
    labels_array = np.asarray(labels)
    splits: dict[str, list[int]] = {"train": [], "test": []}
    for label in range(len(class_names)):
        indices = rng.permutation(np.flatnonzero(labels_array == label)).tolist()
        num_test = math.ceil(len(indices) * holdout_fraction) if len(indices) > 1 else 0
        splits["test"] += sorted(indices[:num_test])
        splits["train"] += sorted(indices[num_test:])

    counts = {}
    progress_bars_were_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        for split, indices in splits.items():
            if indices:
                counts[split] = len(indices)
                examples = [(index, images[index], labels[index]) for index in indices]
                _write_split(
                    output / split if format == "imagefolder" else output / "data",
                    split,
                    examples,
                    class_names,
                    format,
                    num_shards,
                )
    finally:
        if not progress_bars_were_disabled:
            datasets.enable_progress_bars()
    return counts


def _write_split(
    folder: Path,
    split: str,
    examples: list[tuple[int, Image.Image, int]],
    class_names: list[str],
    format: str,
    num_shards: int,
) -> None:
    """(index, image, label) triples -> imagefolder PNGs in class subfolders of ``folder``, or parquet shards."""
    if format == "imagefolder":
        for index, image, label in examples:
            class_folder = folder / f"{label:03d}_{class_names[label]}"
            class_folder.mkdir(parents=True, exist_ok=True)
            image.save(class_folder / f"{index:05d}.png")
        return
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=class_names)})
    table = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": _png_bytes(image), "path": None} for _, image, _ in examples],
            "label": [label for _, _, label in examples],
        },
        features=features,
    )
    shards = min(num_shards, len(examples))
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        part = table.shard(shards, shard, contiguous=True)
        part.to_parquet(str(folder / f"{split}-{shard:05d}-of-{shards:05d}.parquet"))


def load_split_tensors(dataset: str, split: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole (small, local) split as tensors: center-cropped pixels [N, 3, R, R] in [-1, 1] and labels [N]
    (-1 where unknown), in the stored order. For evaluation scripts on the local datasets."""
    config = DataConfig(
        dataset=dataset,
        split=split,
        crop="center",
        random_flip=False,
        alignment_views=False,
        shuffle=False,
        resolution=resolution,
    )
    batches = list(make_dataloader(config, batch_size=256))
    if not batches:
        raise ValueError(f"dataset {dataset!r} split {split!r} yielded no images")
    return torch.cat([b["pixel_values"] for b in batches]), torch.cat([b["label"] for b in batches])
