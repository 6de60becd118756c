"""Generation metrics of a saved pipeline: gFID, precision / recall and the Inception Score (paper Tables 3, 5).

Image i (0 <= i < N) has class ``classes[i % len(classes)]`` (all the generator's classes by default: class
balanced) and its own generator seeded ``seed + i``, so it does not depend on the batch or on the number of
processes: under ``accelerate launch`` process p generates the images i = p, p + W, p + 2W, ... and every process
gathers the features, ordered by i, before the metrics (a W-process run computes what a one-process run does).
Generated images are rounded to 8 bits (as if saved as PNGs) before the Inception network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..image_utils import make_grid, tensor_to_uint8, uint8_to_tensor
from .fid import GaussianStatistics, InceptionFeatures, frechet_distance
from .gather import gather_indexed
from .inception_score import NO_NETWORK_MESSAGE, LogitsNetwork, inception_score
from .precision_recall import DEFAULT_K, precision_recall
from .reference import FIDReference


def _check_positive(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def evaluation_class_ids(pipe, class_labels: Sequence[int | str] | None = None) -> list[int]:
    """The class cycle of the evaluation: ``class_labels`` (ids or names) or every class of the generator."""
    if class_labels is None:
        return list(range(pipe.transformer.config.num_classes))
    ids = pipe.get_label_ids(list(class_labels))
    if not ids:
        raise ValueError("class_labels is empty; give at least one class or None for all classes")
    return ids


@torch.no_grad()
def generate_features(
    pipe,
    num_images: int,
    networks: dict[str, torch.nn.Module],
    batch_size: int = 16,
    seed: int = 0,
    class_labels: Sequence[int | str] | None = None,
    accelerator=None,
    keep_images: int = 0,
    **sampling,
) -> dict[str, torch.Tensor]:
    """Generate images 0..num_images-1 (see the module docstring) and return, on every process and ordered by
    image index, ``{"index", "label", <name>: networks[name](images) for each network}`` plus ``"images"``
    (uint8 [n, H, W, 3]) for the first ``keep_images`` images. ``sampling``: keyword arguments of the pipeline
    call (``guidance_scale``, ``temperature``, ``top_k``, ``top_p``, ``num_tokens``, ``num_inference_steps``)."""
    _check_positive("num_images", num_images)
    _check_positive("batch_size", batch_size)
    _check_positive("keep_images", keep_images, 0)
    classes = evaluation_class_ids(pipe, class_labels)
    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    mine = list(range(rank, num_images, world))
    rows: dict[str, list[torch.Tensor]] = {"label": [], **{name: [] for name in networks}}
    kept, kept_index = [], []
    progress = tqdm(total=len(mine), desc="generating", unit="img", disable=rank != 0)
    for start in range(0, len(mine), batch_size):
        indices = mine[start : start + batch_size]
        labels = [classes[i % len(classes)] for i in indices]
        generators = [torch.Generator().manual_seed(seed + i) for i in indices]
        images = pipe(class_labels=labels, generator=generators, output_type="pt", **sampling).images  # [0, 1]
        pixels8 = tensor_to_uint8(images * 2 - 1)  # as saved in 8-bit PNGs, [B, H, W, 3]
        images = uint8_to_tensor(pixels8)  # what a reader of those PNGs feeds the network
        rows["label"].append(torch.tensor(labels))
        for name, network in networks.items():
            rows[name].append(network(images).float().cpu())
        for i, image in zip(indices, torch.from_numpy(pixels8)):
            if i < keep_images:
                kept.append(image)
                kept_index.append(i)
        progress.update(len(indices))
    progress.close()
    local = {name: torch.cat(values) if values else torch.zeros(0) for name, values in rows.items()}
    gathered = gather_indexed(accelerator, torch.tensor(mine, dtype=torch.long), local)
    if keep_images:
        images = torch.stack(kept) if kept else torch.zeros(0, 1, 1, 3, dtype=torch.uint8)
        gathered["images"] = gather_indexed(
            accelerator, torch.tensor(kept_index, dtype=torch.long), {"images": images}
        )["images"]
    return gathered


def evaluate_generation(
    pipe,
    reference: FIDReference,
    num_images: int = 50_000,
    batch_size: int = 16,
    seed: int = 0,
    class_labels: Sequence[int | str] | None = None,
    inception: InceptionFeatures | torch.nn.Module | None = None,
    logits_network: LogitsNetwork | torch.nn.Module | None = None,
    precision_recall_k: int = DEFAULT_K,
    inception_score_splits: int = 10,
    accelerator=None,
    grid_path: str | Path | None = None,
    grid_images: int = 64,
    **sampling,
) -> dict:
    """gFID of ``num_images`` generated images against ``reference``; precision and recall (k-NN manifolds,
    ``precision_recall_k``) when the reference holds features; the Inception Score when ``logits_network`` is
    given (else ``inception_score`` is None and ``inception_score_note`` says why). ``grid_path``: a PNG of
    the first ``grid_images`` images (written by the main process). Returns a JSON-ready dict that records the
    sampling settings, the class cycle, the seed and the reference's source."""
    if not isinstance(reference, FIDReference):
        raise TypeError(f"reference must be a FIDReference, got {type(reference).__name__}")
    if inception is None:
        inception = InceptionFeatures()
    if reference.features is not None and num_images <= precision_recall_k:
        raise ValueError(f"num_images must exceed precision_recall_k={precision_recall_k}, got {num_images}")
    networks = {"features": inception}
    if logits_network is not None:
        networks["logits"] = logits_network
    started = time.perf_counter()
    rows = generate_features(
        pipe,
        num_images,
        networks,
        batch_size=batch_size,
        seed=seed,
        class_labels=class_labels,
        accelerator=accelerator,
        keep_images=grid_images if grid_path is not None else 0,
        **sampling,
    )
    seconds = time.perf_counter() - started
    features = rows["features"]
    if features.shape[1] != reference.statistics.dim:
        raise ValueError(f"features of dim {features.shape[1]} do not match the reference's {reference.statistics.dim}")
    result = {
        "gfid": frechet_distance(GaussianStatistics.from_features(features), reference.statistics),
        "precision": None,
        "recall": None,
        "inception_score": None,
        "inception_score_std": None,
        "num_images": int(features.shape[0]),
    }
    if reference.features is not None:
        result.update(precision_recall(reference.features, features, k=precision_recall_k))
    else:
        result["precision_recall_note"] = "the reference holds statistics only (no features): no precision / recall"
    if logits_network is not None:
        splits = min(inception_score_splits, features.shape[0])
        result["inception_score"], result["inception_score_std"] = inception_score(rows["logits"], splits)
    else:
        result["inception_score_note"] = NO_NETWORK_MESSAGE
    classes = evaluation_class_ids(pipe, class_labels)
    result["settings"] = {
        "seed": seed,
        "seeds": f"image i uses seed + i = {seed}..{seed + num_images - 1}",
        "classes": "all" if class_labels is None else classes,
        "class_assignment": "image i has class classes[i % len(classes)]",
        "num_classes": len(classes),
        **{k: v for k, v in sampling.items() if v is not None},
        **{k: v if sampling.get(k) is None else sampling[k] for k, v in pipe.sampling_defaults.items()},
        "transformer": type(pipe.transformer).__name__,
        "precision_recall_k": precision_recall_k,
        "processes": 1 if accelerator is None else accelerator.num_processes,
    }
    result["reference"] = reference.source
    result["seconds"] = round(seconds, 3)
    result["images_per_second"] = round(features.shape[0] / seconds, 3) if seconds > 0 else None
    if grid_path is not None and (accelerator is None or accelerator.is_main_process):
        images = uint8_to_tensor(rows["images"])
        grid = make_grid(images, ncols=min(len(classes), 10))  # with all classes: a column per class
        Path(grid_path).parent.mkdir(parents=True, exist_ok=True)
        grid.save(grid_path)
        result["grid"] = str(grid_path)
    return result
