"""Train a generator on a code dataset written by ``mergevq extract-codes`` (``examples/extract_codes.py``).

    accelerate launch examples/train_generator.py --codes data/codes --output-dir runs/mergear \
        --arch mergear --preset mergear-b --batch-size 32 --max-steps 100000 \
        [--tokenizer runs/tokenizer] [--resume latest]

``--arch``: ``mergear`` (raster order, duplicates masked and never cached; paper 4.1), ``raster`` (the same
model without duplicate masking: the plain LlamaGen-style baseline) or ``random-ar`` (the K merged tokens in a
new random order per sample with position instructions; paper 4.2; its position prior is counted on the code
dataset before training).

Reads top to bottom: arguments -> model -> optimizer -> data -> prepare -> (resume) -> one loop with
checkpoints (atomic, ``--total-limit``), metrics in ``metrics.jsonl``, sample grids (with ``--tokenizer``, and
``--source-recovery`` for ``random-ar``), and a final ``save_pretrained`` export with a model card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

from mergevq_hf import (
    MergeARConfig,
    MergeARForCausalLM,
    MergeVQModel,
    RandomARConfig,
    RandomARForCausalLM,
    SourceRecoveryModel,
)
from mergevq_hf.image_utils import make_grid
from mergevq_hf.models.mergear import generate_codes
from mergevq_hf.models.random_ar import generate_random_order
from mergevq_hf.training.checkpoint import TrainingState, register_for_checkpointing, resume_from
from mergevq_hf.training.codes import load_codes, pad_tokens, position_counts
from mergevq_hf.training.loop import TrainingLoop
from mergevq_hf.training.metrics_log import MetricsLogger
from mergevq_hf.training.schedule import step_drop_lr


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codes", required=True, help="folder with train-*.parquet code shards")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--arch", default="mergear", choices=sorted(ARCHS), help="generator kind (see above)")
    p.add_argument("--preset", default=None, help="config preset (default: the arch's B size; not with --init-from)")
    p.add_argument("--config-overrides", default="{}", help="JSON dict of config fields")
    p.add_argument("--init-from", help="pretrained generator folder or Hub id to fine-tune (same --arch)")
    p.add_argument("--tokenizer", help="MergeVQ tokenizer folder, for sample grids")
    p.add_argument("--source-recovery", help="SourceRecoveryModel folder, for random-ar sample grids")
    p.add_argument("--num-inference-steps", type=int, default=None, help="random-ar sample grids: decoding steps")
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--lr-drop-steps", type=int, nargs="*", default=[])
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--sample-every", type=int, default=0)
    p.add_argument("--total-limit", type=int, default=3)
    p.add_argument("--resume", help="'latest' or a checkpoint folder")
    p.add_argument("--report-to", default=None, help="accelerate tracker (tensorboard, wandb, ...)")
    TrainingLoop.add_arguments(p)
    return p.parse_args(argv)


# arch -> (config class, model class, default preset, fixed config fields)
ARCHS = {
    "mergear": (MergeARConfig, MergeARForCausalLM, "mergear-b", {"prune_duplicates": True}),
    "raster": (MergeARConfig, MergeARForCausalLM, "mergear-b", {"prune_duplicates": False}),
    "random-ar": (RandomARConfig, RandomARForCausalLM, "random-ar-b", {}),
}


def create_model(args, num_positions: int):
    config_class, model_class, preset, fixed = ARCHS[args.arch]
    if args.init_from:
        model = model_class.from_pretrained(args.init_from)
        for name, value in fixed.items():
            if getattr(model.config, name) != value:
                raise ValueError(f"--init-from {args.init_from} has {name}={getattr(model.config, name)}, not --arch")
        return model
    overrides = {"num_positions": num_positions, **json.loads(args.config_overrides), **fixed}
    return model_class(config_class.from_preset(args.preset or preset, **overrides))


def training_inputs(raw, batch, labels) -> dict:
    """Keyword arguments of the (wrapped) model's forward for one batch of the code dataset."""
    if isinstance(raw, RandomARForCausalLM):  # a new random order per sample, drawn from the process's RNG
        return raw.training_inputs(batch["tokens"], batch["positions"], labels, batch["num_tokens"])
    return raw.training_inputs(batch["codes"], labels, batch["num_tokens"])


def create_optimizer(model, args):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=tuple(args.betas))


def create_dataloader(args):
    dataset = load_codes(args.codes)
    generator = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator, collate_fn=pad_tokens
    )
    return loader, dataset


@torch.no_grad()
def save_samples(model, tokenizer, recovery, path, num_tokens, args):
    model.eval()
    labels = list(range(min(model.config.num_classes, 8)))
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(len(labels))]
    if isinstance(model, RandomARForCausalLM):
        out = generate_random_order(
            model, labels, num_tokens, args.num_inference_steps, guidance_scale=2.0, generators=generators
        )
        device = tokenizer.device
        images = tokenizer.decode(out.codes.to(device), source_recovery=recovery, positions=out.positions.to(device))
    else:
        codes = generate_codes(model, labels, num_tokens, guidance_scale=2.0, temperature=1.0, generators=generators)
        images = tokenizer.decode(codes.to(tokenizer.device))
    make_grid(images.clamp(-1, 1), ncols=len(labels)).save(path)
    model.train()


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(args.seed)  # identical initialisation on every process (not everything is DDP-broadcast)
    loader, dataset = create_dataloader(args)
    model = create_model(args, len(dataset[0]["codes"]))
    if isinstance(model, RandomARForCausalLM) and not args.init_from:
        model.set_position_prior(position_counts(dataset, model.config.num_positions))
    optimizer = create_optimizer(model, args)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    set_seed(args.seed, device_specific=True)  # from here on, per-process randomness (dropout, label dropout)
    state = TrainingState()
    register_for_checkpointing(accelerator, training=state)  # safetensors, not accelerate's pickle
    if args.report_to:
        accelerator.init_trackers(args.arch, config=vars(args))
    resumed = resume_from(accelerator, output, args.resume)
    if resumed:
        accelerator.print(f"resumed from {resumed} at step {state.step}")
    tokenizer = MergeVQModel.from_pretrained(args.tokenizer).to(accelerator.device).eval() if args.tokenizer else None
    recovery = None
    if args.source_recovery:
        recovery = SourceRecoveryModel.from_pretrained(args.source_recovery).to(accelerator.device).eval()
    if tokenizer is not None and args.arch == "random-ar" and recovery is None:
        raise ValueError("--tokenizer with --arch random-ar needs --source-recovery to decode sample grids")
    logger = MetricsLogger(accelerator, output / "metrics.jsonl")

    model.train()
    loop = TrainingLoop.from_args(accelerator, loader, state, args, desc=args.arch)
    for batch in loop:
        with accelerator.accumulate(model):
            raw = accelerator.unwrap_model(model)
            labels = batch["label"].masked_fill(batch["label"] < 0, raw.config.num_classes)  # unknown: null class
            # through the wrapped model's forward: DDP averages the gradients over processes
            loss = model(**training_inputs(raw, batch, labels)).loss
            accelerator.backward(loss)
            apply = True
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                apply = loop.good_step(loss, grad_norm)  # the same decision on every process
            for group in optimizer.param_groups:
                group["lr"] = step_drop_lr(args.lr, state.step, args.lr_drop_steps)
            if apply:
                optimizer.step()
            optimizer.zero_grad()
        if not loop.step_completed():
            continue
        if loop.every(args.log_every):
            loss_mean = accelerator.gather(loss.detach()[None]).mean()
            lr = optimizer.param_groups[0]["lr"]
            speed = loop.throughput()
            metrics = {"loss": loss_mean, "grad_norm": grad_norm, "lr": lr, "epoch": state.epoch, **speed}
            logger.log(metrics, step=state.step)
            loop.set_postfix(loss=f"{loss_mean.item():.4f}", samples_s=f"{speed['samples_per_s']:.1f}")
        if tokenizer is not None and loop.every(args.sample_every) and accelerator.is_main_process:
            (output / "samples").mkdir(parents=True, exist_ok=True)
            k = int(batch["num_tokens"][0])
            raw = accelerator.unwrap_model(model)
            save_samples(raw, tokenizer, recovery, output / f"samples/step-{state.step}.png", k, args)

    loop.export(model, "random_ar" if args.arch == "random-ar" else "mergear", vars(args))
    loop.finish()


if __name__ == "__main__":
    main()
