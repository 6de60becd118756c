"""End-to-end fine-tuning of a MergeVQ tokenizer's encoder for classification (paper A.4, Table 1: SimMIM-style
full fine-tuning), on a ``datasets`` stream (ImageNet by default, any labelled local parquet / imagefolder).

    accelerate launch examples/finetune_classifier.py --tokenizer runs/tok/final --output-dir runs/ft \
        [--dataset ILSVRC/imagenet-1k --train-split train --eval-split validation]

The recipe, with timm's implementations: RandAugment (``--rand-augment``, timm policy string) on random resized
crops with flips, mixup / cutmix with label smoothing (``timm.data.Mixup``), AdamW with layer-wise lr decay
(``timm.optim.param_groups_layer_decay`` over the model's ``group_matcher``: the CNN stage, each attention block,
the head), cosine schedule with warm-up (``timm.scheduler.CosineLRScheduler``, per step), drop path in the
encoder blocks (``--drop-path``). Logits come from the final CLS state (``MergeVQForImageClassification``), the
encoder merging to ``--num-tokens`` K. Data parallel under ``accelerate launch`` (each process reads its shard of
the stream; gradients are averaged); held-out top-1 is computed on every process's shard and summed. Same loop
as the other scripts: checkpoints, ``--resume latest``, ``metrics.jsonl``, final ``save_pretrained`` + card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from mergevq_hf import MergeVQConfig, MergeVQForImageClassification
from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR
from mergevq_hf.optional import import_timm
from mergevq_hf.training.checkpoint import TrainingState, register_for_checkpointing, resume_from
from mergevq_hf.training.data import DataConfig, load_image_stream, make_dataloader
from mergevq_hf.training.loop import TrainingLoop
from mergevq_hf.training.metrics_log import MetricsLogger

import_timm("examples/finetune_classifier.py")  # one clear error when the [vision] extra is missing
from timm.data import Mixup  # noqa: E402
from timm.optim import param_groups_layer_decay  # noqa: E402
from timm.scheduler import CosineLRScheduler  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", default=str(DEFAULT_PIPELINE_DIR / "tokenizer"), help="tokenizer to fine-tune")
    p.add_argument("--dataset", default="ILSVRC/imagenet-1k")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", default="validation", help="empty for none")
    p.add_argument("--image-column", default="image")
    p.add_argument("--label-column", default="label")
    p.add_argument("--num-labels", type=int, help="default: the dataset's ClassLabel count")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--num-tokens", type=int, help="K the encoder merges to (default: the tokenizer's)")
    p.add_argument("--batch-size", type=int, default=64, help="per process (even: mixup pairs images)")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--schedule-steps", type=int, help="length of the cosine schedule (default: --max-steps)")
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--layer-decay", type=float, default=0.75)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--rand-augment", default="rand-m9-mstd0.5-inc1", help="timm policy; 'none' to disable")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (digits, text)")
    p.add_argument("--shuffle-buffer", type=int, default=10_000, help="datasets' shuffle buffer (train stream)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.08, 1.0))
    p.add_argument("--mixup", type=float, default=0.8, help="mixup alpha (0 = off)")
    p.add_argument("--cutmix", type=float, default=1.0, help="cutmix alpha (0 = off)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--max-grad-norm", type=float, default=5.0)
    p.add_argument("--eval-max-images", type=int, help="held-out images per process (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--total-limit", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--resume", help="'latest' or a checkpoint folder")
    TrainingLoop.add_arguments(p)
    return p.parse_args(argv)


def data_config(args, split: str, resolution: int, train: bool) -> DataConfig:
    common = dict(
        dataset=args.dataset,
        split=split,
        image_column=args.image_column,
        label_column=args.label_column,
        resolution=resolution,
        alignment_views=False,
        seed=args.seed,
    )
    if not train:
        return DataConfig(**common, crop="center", random_flip=False, shuffle=False)
    policy = None if args.rand_augment.lower() == "none" else args.rand_augment
    return DataConfig(
        **common,
        crop_scale=tuple(args.crop_scale),
        rand_augment=policy,
        shuffle_buffer=args.shuffle_buffer,
        random_flip=not args.no_flip,
    )


def num_labels(args, config: DataConfig) -> int:
    if args.num_labels is not None:
        return args.num_labels
    feature = load_image_stream(config).features[args.label_column]
    if not hasattr(feature, "num_classes"):
        raise ValueError(f"label column {args.label_column!r} is not a ClassLabel; pass --num-labels")
    return feature.num_classes


def main(argv=None):
    args = parse_args(argv)
    if args.batch_size % 2 and (args.mixup > 0 or args.cutmix > 0):
        raise ValueError(f"--batch-size {args.batch_size}: mixup / cutmix pair images, use an even batch size")
    output = Path(args.output_dir)
    accelerator = Accelerator(project_config=ProjectConfiguration(project_dir=str(output)))
    set_seed(args.seed)
    resolution = MergeVQConfig.from_pretrained(args.tokenizer).resolution
    train_config = data_config(args, args.train_split, resolution, train=True)
    classes = num_labels(args, train_config)
    model = MergeVQForImageClassification.from_pretrained(
        args.tokenizer, num_labels=classes, drop_path_rate=args.drop_path
    )
    groups = param_groups_layer_decay(
        model, args.weight_decay, no_weight_decay_list=["encoder.attn.cls_token"], layer_decay=args.layer_decay
    )
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999))
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=args.schedule_steps or args.max_steps,
        lr_min=args.min_lr,
        warmup_t=args.warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    mixup = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.label_smoothing, num_classes=classes
        )
    rank, world = accelerator.process_index, accelerator.num_processes
    loader = make_dataloader(train_config, args.batch_size, rank, world, num_workers=args.num_workers, drop_last=True)
    model, optimizer = accelerator.prepare(model, optimizer)  # the loader is sharded already: not prepared
    state = TrainingState()
    register_for_checkpointing(accelerator, training=state)
    resumed = resume_from(accelerator, output, args.resume)
    if resumed:
        accelerator.print(f"resumed from {resumed} at step {state.step}")
    logger = MetricsLogger(accelerator, output / "metrics.jsonl")

    @torch.no_grad()
    @torch.random.fork_rng(devices=[])  # a DataLoader draws its seed from the global RNG: keep training's intact
    def heldout_top1() -> float:
        raw = accelerator.unwrap_model(model).eval()
        config = data_config(args, args.eval_split, resolution, train=False)
        right = total = 0
        for batch in make_dataloader(config, args.batch_size, rank, world):
            if args.eval_max_images is not None and total >= args.eval_max_images:
                break
            logits = raw(batch["pixel_values"].to(accelerator.device), num_tokens=args.num_tokens).logits
            right += int((logits.argmax(-1).cpu() == batch["label"]).sum())
            total += batch["label"].numel()
        raw.train()
        counts = accelerator.reduce(torch.tensor([right, total], device=accelerator.device), reduction="sum")
        return float(counts[0] / counts[1].clamp(min=1))

    model.train()
    loop = TrainingLoop.from_args(accelerator, loader, state, args, desc="finetune")
    for batch in loop:
        pixels, labels = batch["pixel_values"].to(accelerator.device), batch["label"].to(accelerator.device)
        if (labels < 0).any():
            raise ValueError(f"{args.dataset} split {args.train_split} has unlabelled images (label -1)")
        scheduler.step_update(state.step + 1)  # this step's lr (x each group's layer-decay scale), set from the count
        targets = labels
        if mixup is not None:
            pixels, targets = mixup(pixels, labels)  # soft targets [B, C] (label smoothing included)
        loss = model(pixels, labels=targets, num_tokens=args.num_tokens).loss
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        if loop.good_step(loss, grad_norm):  # the same decision on every process
            optimizer.step()
        optimizer.zero_grad()
        if not loop.step_completed():
            continue
        metrics = {}
        if loop.every(args.log_every):
            metrics.update(loss=accelerator.gather(loss.detach()[None]).mean(), grad_norm=grad_norm)
            metrics.update(loop.throughput())
            metrics["lr"] = max(group["lr"] for group in optimizer.param_groups)
        if args.eval_split and (loop.every(args.eval_every) or state.step == args.max_steps):
            metrics["heldout_top1"] = heldout_top1()
        if metrics:
            logger.log({**metrics, "epoch": state.epoch}, step=state.step)

    loop.export(model, "classifier", vars(args))
    loop.finish()


if __name__ == "__main__":
    main()
