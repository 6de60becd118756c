"""Learning-rate schedules of the training scripts."""

from __future__ import annotations


def step_drop_lr(base_lr: float, step: int, drop_steps: list[int], rate: float = 0.1) -> float:
    """Learning rate multiplied by ``rate`` at each step in ``drop_steps`` (the paper's 'Step' schedule)."""
    return base_lr * rate ** sum(step >= s for s in drop_steps)


__all__ = ["step_drop_lr"]
