"""Exponential moving average of a model's parameters (decay 0.999 as the official LitEma)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMAModel:
    """Keeps ``shadow``, a frozen copy of ``model`` whose parameters follow ``decay * shadow + (1 - decay) * model``.
    Buffers are copied as they are. ``state_dict`` is ``{"decay": float, "num_updates": int, "shadow": the shadow's
    state dict}``: tensors and plain numbers only, so ``checkpoint.register_for_checkpointing`` stores it in a
    safetensors file (no pickle); ``load_state_dict`` also accepts the numbers as 0-d tensors."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay}; allowed: 0 <= decay < 1")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        for ema_param, param in zip(self.shadow.parameters(), model.parameters()):
            ema_param.lerp_(param.detach().to(ema_param.dtype), 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.shadow.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        decay, num_updates = float(state["decay"]), int(state["num_updates"])
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay} in the state; allowed: 0 <= decay < 1")
        self.shadow.load_state_dict(state["shadow"])
        self.decay, self.num_updates = decay, num_updates
