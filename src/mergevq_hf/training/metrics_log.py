"""Metrics as JSONL (``metrics.jsonl``, one object per logged step, main process) plus any accelerate tracker; a
resumed run first drops the rows the interrupted run logged after its checkpoint, so the file reads as one run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from .checkpoint import resumed_step as _resumed_step


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep only the rows of a ``metrics.jsonl`` with ``step <= step`` (and drop unparsable, half-written
    lines); rewritten atomically. Returns how many rows were dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            keep = int(row["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


class MetricsLogger:
    """Appends one JSON object per call to ``metrics.jsonl`` (main process) and forwards to trackers.

    After a resume (``resumed_step``, by default the step ``checkpoint.resume_from`` resumed at for this accelerator),
    rows logged after that step by the interrupted run are dropped first, so the file reads as one run."""

    def __init__(self, accelerator: Accelerator, path: str | Path, resumed_step: int | None = None):
        self.accelerator = accelerator
        self.path = Path(path)
        if resumed_step is None:
            resumed_step = _resumed_step(accelerator)
        if accelerator.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resumed_step is not None:
                truncate_metrics(self.path, resumed_step)

    def log(self, metrics: dict, step: int) -> None:
        clean = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        if self.accelerator.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "time": round(time.time(), 3), **clean}) + "\n")
        if self.accelerator.trackers:
            self.accelerator.log(clean, step=step)


__all__ = ["MetricsLogger", "truncate_metrics"]
