"""Collecting per-process evaluation rows on every process, in an order that does not depend on the process
count (so a metric computed after the gather equals the one-process result)."""

from __future__ import annotations

import torch


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
