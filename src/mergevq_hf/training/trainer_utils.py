"""Pieces every training script shares: atomic checkpoints with a retention limit, exact resume,
metrics as JSONL (plus any accelerate tracker), and the step-drop learning-rate schedule."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")


class TrainingState:
    """Counters saved with every checkpoint (registered with ``accelerator.register_for_checkpointing``)."""

    def __init__(self):
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.exists():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, step: int, total_limit: int | None) -> Path:
    """``accelerator.save_state`` into a temporary folder, then an atomic rename to ``step-N``; keeps the
    newest ``total_limit`` checkpoints. A crash mid-save leaves only a ``tmp-*`` folder, never a
    half-written ``step-N``."""
    root = Path(output_dir) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f"tmp-step-{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume_from(accelerator: Accelerator, output_dir: str | Path, resume: str | None) -> Path | None:
    """Load ``resume`` ("latest" or a checkpoint folder) with ``accelerator.load_state``; None if nothing."""
    if not resume:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            accelerator.print(f"--resume latest: no checkpoint under {output_dir}/checkpoints, starting fresh")
            return None
        path = checkpoints[-1]
    else:
        path = Path(resume)
        if not path.is_dir():
            raise ValueError(f"--resume {resume!r} is neither 'latest' nor a checkpoint folder")
    accelerator.load_state(str(path))
    return path


class MetricsLogger:
    """Appends one JSON object per call to ``metrics.jsonl`` (main process) and forwards to trackers."""

    def __init__(self, accelerator: Accelerator, path: str | Path):
        self.accelerator = accelerator
        self.path = Path(path)
        if accelerator.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, metrics: dict, step: int) -> None:
        clean = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        if self.accelerator.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "time": round(time.time(), 3), **clean}) + "\n")
        if self.accelerator.trackers:
            self.accelerator.log(clean, step=step)


def step_drop_lr(base_lr: float, step: int, drop_steps: list[int], rate: float = 0.1) -> float:
    """Learning rate multiplied by ``rate`` at each step in ``drop_steps`` (the paper's 'Step' schedule)."""
    return base_lr * rate ** sum(step >= s for s in drop_steps)
