"""Small REAL image datasets built offline from pictures shipped inside pip packages (scikit-image photos, the
sklearn handwritten digits), written as parquet or imagefolder: for tests, examples and benchmarks that must run
without a download. Not part of training: they load like any other local dataset
(``DataConfig(dataset=str(output), split=...)``)."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from ..image_utils import to_rgb
from ..training.data.config import _check_int

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
