"""Reference sets for generation metrics: Inception statistics (FID) and, where available, the reference features
themselves (precision / recall).

Two sources:

* an ADM-style reference ``.npz`` (the format papers report gFID against): ``mu`` and ``sigma``; when it also
  holds the reference images (``arr_0``, [N, H, W, 3] uint8, as ADM's ``VIRTUAL_imagenet256_labeled.npz``),
  their features are computed for precision / recall; files written by :meth:`FIDReference.save` hold them
  as ``features``;
* a ``datasets`` split (Hub id or a local parquet / imagefolder), streamed, center-cropped to the generator's
  resolution, featurised across processes and cached to an ``.npz`` (reused while its recorded source matches).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..image_utils import uint8_to_tensor
from .fid import GaussianStatistics, InceptionFeatures, module_device
from .gather import featurize_split

ADM_IMAGES_KEY = "arr_0"


@dataclass
class FIDReference:
    """Reference statistics, optionally the reference features [N, D] (needed for precision / recall), and a
    description of where they came from (saved with them; a cache is reused only when it matches)."""

    statistics: GaussianStatistics
    features: torch.Tensor | None = None
    source: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        extra = {"source": np.array(json.dumps(self.source, sort_keys=True))}
        if self.features is not None:
            extra["features"] = self.features.float().numpy()
        return self.statistics.save_npz(path, **extra)

    @classmethod
    def load(
        cls, path: str | os.PathLike, inception: InceptionFeatures | None = None, batch_size: int = 64
    ) -> FIDReference:
        """Read a reference ``.npz``. With ``inception``, an ADM file's reference images (``arr_0``) are turned
        into features for precision / recall; without it they are left alone (FID only)."""
        statistics = GaussianStatistics.load_npz(path)
        features, source = None, {"npz": str(path)}
        with np.load(path, allow_pickle=False) as data:
            if "source" in data.files:
                source = json.loads(str(data["source"]))
            if "features" in data.files:
                features = torch.from_numpy(data["features"])
            elif ADM_IMAGES_KEY in data.files and inception is not None:
                features = _features_of_uint8_images(data[ADM_IMAGES_KEY], inception, batch_size)
        if features is not None and (features.ndim != 2 or features.shape[1] != statistics.dim):
            raise ValueError(
                f"{str(path)!r}: reference features of shape {tuple(features.shape)} do not match the statistics' "
                f"dim {statistics.dim}"
            )
        return cls(statistics, features, source)

    @classmethod
    def from_dataset(
        cls,
        data,
        inception: InceptionFeatures,
        max_images: int | None = None,
        batch_size: int = 64,
        accelerator=None,
        cache: str | os.PathLike | None = None,
    ) -> FIDReference:
        """Statistics and features of a ``datasets`` split (``data``: a ``DataConfig``; its crop is forced to
        "center", without flips or alignment views). Each process featurises its shard of the stream and all
        processes gather the features. ``max_images`` caps the count (each process takes its share: which
        images make the cap depends on the process count; None = the whole split). ``cache``: an ``.npz`` that
        is read when its recorded source matches and written (by the main process, atomically) otherwise."""
        from dataclasses import replace

        data = replace(data, crop="center", random_flip=False, alignment_views=False, shuffle=False)
        if max_images is not None and (
            isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 2
        ):
            raise ValueError(f"max_images must be None or an int >= 2, got {max_images!r}")
        source = {
            "dataset": data.dataset,
            "split": data.split,
            "image_column": data.image_column,
            "resolution": data.resolution,
            "max_images": max_images,
            "network": str(getattr(inception, "weights_path", type(inception).__name__)),
        }
        if cache is not None and Path(cache).is_file():
            cached = cls.load(cache)
            request = {key: value for key, value in cached.source.items() if key != "num_images"}
            if request == source and cached.features is not None:
                return cached
        rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
        share = None if max_images is None else max_images // world + (1 if rank < max_images % world else 0)
        device = module_device(inception)
        features = featurize_split(
            data, lambda pixels: inception(pixels.to(device)), batch_size, share, accelerator, "reference features"
        )["features"]
        if features.shape[0] < 2:
            raise ValueError(
                f"dataset {data.dataset!r} split {data.split!r} gave {features.shape[0]} images; need >= 2"
            )
        source["num_images"] = int(features.shape[0])
        reference = cls(GaussianStatistics.from_features(features), features, source)
        if cache is not None and (accelerator is None or accelerator.is_main_process):
            reference.save(cache)
        if accelerator is not None:
            accelerator.wait_for_everyone()
        return reference


def _features_of_uint8_images(images: np.ndarray, inception: InceptionFeatures, batch_size: int) -> torch.Tensor:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"reference images must be [N, H, W, 3] uint8, got {images.shape} {images.dtype}")
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="reference image features", unit="batch"):
        batch = uint8_to_tensor(images[start : start + batch_size])
        chunks.append(inception(batch.to(module_device(inception))).float().cpu())
    return torch.cat(chunks)
