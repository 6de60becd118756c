"""The ``datasets`` stream of one process and the robust decode-and-augment stream on top of it.

    load_image_stream(config, rank, world)   datasets.IterableDataset, sharded per process, buffer-shuffled,
                                             image column kept undecoded ({"bytes", "path"})
    RobustImageStream(stream, config, rank)  torch IterableDataset: decodes in our code (corrupt files skipped and
                                             counted, odd modes converted to RGB and counted), then augments with
                                             a per-process/worker/epoch seeded torch.Generator
    make_dataloader(...)                     torch DataLoader over the above (default collate)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node

from ...image_utils import to_rgb
from .augment import augmentation_seed, transform_example
from .config import DataConfig, _check_int
from .decoding import DECODE_ERRORS, ImageTooLargeError, open_image

logger = logging.getLogger(__name__)


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
            except DECODE_ERRORS as error:
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
    # The loader's own generator: creating an iterator (each epoch, and again after a resume) draws a seed from it,
    # not from the global torch RNG, so a resumed run's later global draws (dropout, drop path, ...) stay in step.
    dataloader_kwargs.setdefault("generator", torch.Generator().manual_seed(config.seed))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, **dataloader_kwargs)


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
