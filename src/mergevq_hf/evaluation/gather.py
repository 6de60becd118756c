"""Per-process evaluation work on a ``datasets`` split and collecting its rows on every process, in an order that
does not depend on the process count (so a metric computed after the gather equals the one-process result)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from tqdm.auto import tqdm


def _world(accelerator) -> tuple[int, int]:
    if accelerator is None:
        return 0, 1
    return accelerator.process_index, accelerator.num_processes


def gather_rows(accelerator, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate every process's ``rows`` ({name: [n_p, ...] CPU tensors}, the same names and trailing shapes on
    all processes; n_p may differ, and a process with n_p = 0 may hold any empty placeholder) on every process, in
    rank order. Without an accelerator (or with one process) the rows are returned as they are."""
    _, world = _world(accelerator)
    if world == 1:
        return rows
    from accelerate.utils import gather_object

    parts = gather_object([{name: value.cpu() for name, value in rows.items()}])
    gathered = {}
    for name in rows:
        # a process that got no rows (more processes than items) may hold a placeholder of another shape
        filled = [part[name] for part in parts if part[name].shape[0] > 0]
        gathered[name] = torch.cat(filled) if filled else parts[0][name]
    return gathered


def gather_indexed(accelerator, indices: torch.Tensor, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Like :func:`gather_rows`, then sorted by ``indices`` (each process's global row numbers): row i of the
    result is global row i, whatever the number of processes. Returns ``rows`` plus ``"index"``."""
    gathered = gather_rows(accelerator, {"index": indices.long().cpu(), **rows})
    order = gathered["index"].argsort(stable=True)
    return {name: value[order] for name, value in gathered.items()}


def sort_by_content(rows: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    """Order rows by their content (a fixed random projection of ``rows[key]``, float64): a set of examples read
    from sharded streams, whose gathered order depends on the process count, gets one canonical order."""
    values = rows[key].detach().double().flatten(1)
    projection = torch.randn(values.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    order = (values @ projection).argsort(stable=True)
    return {name: value[order] for name, value in rows.items()}


@torch.no_grad()
def featurize_split(
    data,
    featurize: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 64,
    max_images: int | None = None,
    accelerator=None,
    desc: str = "features",
) -> dict[str, torch.Tensor]:
    """``{"features": [N, D] float32, "label": [N]}`` of a ``datasets`` split (``data``: a ``DataConfig``, read
    with a center crop, no flips, no alignment views, no shuffle): each process runs ``featurize`` (CPU images
    [B, 3, R, R] in [-1, 1] -> [B, D]) on at most ``max_images`` images of its shard (None: all of it), then
    every process gets all rows in rank order (see :func:`sort_by_content` for an order independent of the
    process count)."""
    from ..training.data import make_dataloader

    data = replace(data, crop="center", random_flip=False, alignment_views=False, shuffle=False)
    rank, world = _world(accelerator)
    features, labels, count = [], [], 0
    loader = make_dataloader(data, batch_size=batch_size, process_index=rank, num_processes=world)
    for batch in tqdm(loader, desc=f"{desc} ({data.split})", unit="batch", disable=rank != 0):
        pixels, label = batch["pixel_values"], batch["label"]
        if max_images is not None:
            pixels, label = pixels[: max_images - count], label[: max_images - count]
            if pixels.shape[0] == 0:
                break
        features.append(featurize(pixels).float().cpu())
        labels.append(label.long())
        count += pixels.shape[0]
    local = {
        "features": torch.cat(features) if features else torch.zeros(0),
        "label": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
    }
    return gather_rows(accelerator, local)
