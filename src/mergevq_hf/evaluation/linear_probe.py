"""Linear probing of frozen tokenizer features (paper Table 1, Table 4; protocol of A.4).

Features (``feature``):

* ``"cls"`` (default): the encoder's final CLS hidden state, the token the representation alignment (Eq. 12)
  trains through its head;
* ``"tokens"``: the mean of the K quantized tokens (the +-1 LFQ codes the generator sees).

Protocol (A.4, MAE's linear probe): a parameter-free BatchNorm (``affine=False``) then a linear layer on the
frozen features, AdamW, cosine learning-rate schedule with linear warm-up (timm's ``CosineLRScheduler``),
batch 1024, lr 1e-3, 90 epochs. Features are computed once per image (center crop, no augmentation).

Processes: under ``accelerate launch`` each process encodes its shard of the ``datasets`` stream (the costly
part), the features are gathered on every process and put in one canonical order (by content), and every process
fits the same probe from the same seed: the result equals a one-process run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..optional import import_timm
from .gather import featurize_split, sort_by_content

FEATURE_KINDS = ("cls", "tokens")


def tokenizer_features(tokenizer, pixel_values: torch.Tensor, feature: str = "cls", num_tokens: int | None = None):
    """[B, D] features of a MergeVQ tokenizer for images [B, 3, H, W] in [-1, 1] (see the module docstring)."""
    if feature not in FEATURE_KINDS:
        raise ValueError(f"feature={feature!r}; allowed: {FEATURE_KINDS}")
    encoded = tokenizer.encode(pixel_values, num_tokens=num_tokens)
    if feature == "cls":
        return encoded.cls_token
    return encoded.quantized.mean(dim=1)


@torch.no_grad()
def extract_features(
    tokenizer,
    data,
    feature: str = "cls",
    num_tokens: int | None = None,
    batch_size: int = 64,
    max_images: int | None = None,
    accelerator=None,
) -> dict[str, torch.Tensor]:
    """``{"features": [N, D] float32, "label": [N]}`` of a labelled ``datasets`` split (``data``: a
    ``DataConfig``; center crop at the tokenizer's resolution, no flips, no views), gathered from all processes
    on every process, in a canonical order. ``max_images``: at most this many per process (None: all)."""
    if data.label_column is None:
        raise ValueError("linear probing needs labels: give the dataset's label column (label_column)")
    data = replace(data, resolution=tokenizer.config.resolution)
    device = next(tokenizer.parameters()).device
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        rows = featurize_split(
            data,
            lambda pixels: tokenizer_features(tokenizer, pixels.to(device), feature, num_tokens),
            batch_size,
            max_images,
            accelerator,
        )
    finally:
        tokenizer.train(was_training)
    rows = sort_by_content(rows, "features")
    if rows["features"].shape[0] == 0:
        raise ValueError(f"dataset {data.dataset!r} split {data.split!r} yielded no images")
    if (rows["label"] < 0).any():
        raise ValueError(f"dataset {data.dataset!r} split {data.split!r} has unlabelled images (label -1)")
    return rows


@dataclass
class LinearProbeConfig:
    """The probe's optimisation (defaults: paper A.4)."""

    epochs: int = 90
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_epochs: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("warmup_epochs", 0), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs}), or 0")


class LinearProbe(nn.Module):
    """Parameter-free BatchNorm + linear classifier (MAE's probe head: weights ~ trunc normal, std 0.01)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        import_timm("the linear probe")
        from timm.layers import trunc_normal_

        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(features))


def _accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).double().mean())


def train_linear_probe(
    train: dict[str, torch.Tensor],
    evaluation: dict[str, torch.Tensor],
    config: LinearProbeConfig | None = None,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
) -> tuple[LinearProbe, dict]:
    """Fit a :class:`LinearProbe` on ``train`` ({"features", "label"}) and report top-1 / top-5 accuracy on
    ``evaluation`` (BatchNorm in eval mode: its running statistics). Deterministic for a given seed and input
    order. Returns (probe, {"top1", "top5", "train_top1", "epochs", "steps", ...})."""
    import_timm("the linear probe")
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    config = config or LinearProbeConfig()
    for name, rows in (("train", train), ("evaluation", evaluation)):
        if not isinstance(rows, dict) or "features" not in rows or "label" not in rows:
            raise TypeError(f"{name} must be a dict with 'features' [N, D] and 'label' [N]")
        if rows["features"].ndim != 2 or rows["label"].shape != rows["features"].shape[:1]:
            raise ValueError(f"{name}: features [N, D] and label [N] expected")
    dim = train["features"].shape[1]
    if evaluation["features"].shape[1] != dim:
        raise ValueError(f"feature dims differ: train {dim}, evaluation {evaluation['features'].shape[1]}")
    seen = int(max(train["label"].max(), evaluation["label"].max())) + 1
    num_classes = num_classes or seen
    if num_classes < seen:
        raise ValueError(f"num_classes={num_classes} but labels go up to {seen - 1}")
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        probe = LinearProbe(dim, num_classes).to(device)
    optimizer = create_optimizer_v2(probe, opt="adamw", lr=config.lr, weight_decay=config.weight_decay)
    features, labels = train["features"].float().to(device), train["label"].long().to(device)
    count = features.shape[0]
    steps_per_epoch = math.ceil(count / config.batch_size)
    total = config.epochs * steps_per_epoch
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=total,
        lr_min=0.0,
        warmup_t=config.warmup_epochs * steps_per_epoch,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    probe.train()
    step = 0
    for _ in tqdm(range(config.epochs), desc="linear probe", unit="epoch", disable=not show_progress):
        order = torch.randperm(count, generator=generator).to(device)
        for start in range(0, count, config.batch_size):
            batch = order[start : start + config.batch_size]
            if batch.numel() < 2:  # BatchNorm needs 2 samples
                continue
            loss = F.cross_entropy(probe(features[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
    probe.eval()
    with torch.no_grad():
        eval_logits = probe(evaluation["features"].float().to(device)).cpu()
        train_logits = probe(features).cpu()
    eval_labels = evaluation["label"].long().cpu()
    report = {
        "top1": _accuracy(eval_logits, eval_labels, 1),
        "top5": _accuracy(eval_logits, eval_labels, 5),
        "train_top1": _accuracy(train_logits, labels.cpu(), 1),
        "num_train": int(count),
        "num_eval": int(eval_labels.numel()),
        "feature_dim": int(dim),
        "num_classes": int(num_classes),
        "steps": step,
        "final_loss": float(loss.detach()) if step else None,
        **{
            key: getattr(config, key) for key in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "seed")
        },
    }
    return probe, report
