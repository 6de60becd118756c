"""Train MergeAR on a code dataset written by ``examples/extract_codes.py`` (``mergevq extract-codes``).

    accelerate launch examples/train_mergear.py --codes data/codes --output-dir runs/mergear \
        --preset mergear-b --batch-size 32 --max-steps 100000 [--tokenizer runs/tokenizer] [--resume latest]

Reads top to bottom: arguments -> model -> optimizer -> data -> prepare -> (resume) -> one loop with
checkpoints (atomic, ``--total-limit``), metrics in ``metrics.jsonl``, sample grids (with ``--tokenizer``),
and a final ``save_pretrained`` export with a model card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from mergevq_hf import MergeARConfig, MergeARForCausalLM, MergeVQModel
from mergevq_hf.image_utils import make_grid
from mergevq_hf.model_card import write_model_card
from mergevq_hf.models.mergear import generate_codes
from mergevq_hf.training.codes import load_codes
from mergevq_hf.training.trainer_utils import (
    MetricsLogger,
    TrainingState,
    register_for_checkpointing,
    resume_from,
    save_checkpoint,
    step_drop_lr,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codes", required=True, help="folder with train-*.parquet code shards")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--preset", default="mergear-b", help="MergeARConfig preset (ignored with --init-from)")
    p.add_argument("--config-overrides", default="{}", help="JSON dict of MergeARConfig fields")
    p.add_argument("--init-from", help="pretrained MergeAR folder or Hub id to fine-tune")
    p.add_argument("--tokenizer", help="MergeVQ tokenizer folder, for sample grids")
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
    return p.parse_args(argv)


def create_model(args, num_positions: int) -> MergeARForCausalLM:
    if args.init_from:
        return MergeARForCausalLM.from_pretrained(args.init_from)
    overrides = {"num_positions": num_positions, **json.loads(args.config_overrides)}
    return MergeARForCausalLM(MergeARConfig.from_preset(args.preset, **overrides))


def create_optimizer(model, args):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=tuple(args.betas))


def create_dataloader(args):
    dataset = load_codes(args.codes)
    generator = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator
    )
    return loader, len(dataset[0]["codes"])


@torch.no_grad()
def save_samples(model, tokenizer, path, num_tokens, seed):
    model.eval()
    labels = list(range(min(model.config.num_classes, 8)))
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(labels))]
    codes = generate_codes(model, labels, num_tokens, guidance_scale=2.0, temperature=1.0, generators=generators)
    images = tokenizer.decode(codes.to(tokenizer.device)).clamp(-1, 1)
    make_grid(images, ncols=len(labels)).save(path)
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
    loader, num_positions = create_dataloader(args)
    model = create_model(args, num_positions)
    optimizer = create_optimizer(model, args)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    set_seed(args.seed, device_specific=True)  # from here on, per-process randomness (dropout, label dropout)
    state = TrainingState()
    register_for_checkpointing(accelerator, training=state)  # safetensors, not accelerate's pickle
    if args.report_to:
        accelerator.init_trackers("mergear", config=vars(args))
    resumed = resume_from(accelerator, output, args.resume)
    if resumed:
        accelerator.print(f"resumed from {resumed} at step {state.step}")
    tokenizer = MergeVQModel.from_pretrained(args.tokenizer).to(accelerator.device).eval() if args.tokenizer else None
    logger = MetricsLogger(accelerator, output / "metrics.jsonl")

    model.train()
    progress = tqdm(total=args.max_steps, initial=state.step, disable=not accelerator.is_main_process, desc="mergear")
    while state.step < args.max_steps:
        loader.set_epoch(state.epoch)
        batches = accelerator.skip_first_batches(loader, state.step_in_epoch) if state.step_in_epoch else loader
        for batch in batches:
            with accelerator.accumulate(model):
                raw = accelerator.unwrap_model(model)
                labels = batch["label"].masked_fill(batch["label"] < 0, raw.config.num_classes)  # unknown: null class
                # through the wrapped model's forward: DDP averages the gradients over processes
                loss = model(**raw.training_inputs(batch["codes"], labels, batch["num_tokens"])).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                for group in optimizer.param_groups:
                    group["lr"] = step_drop_lr(args.lr, state.step, args.lr_drop_steps)
                optimizer.step()
                optimizer.zero_grad()
            state.step_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            progress.update(1)
            if state.step % args.log_every == 0:
                loss_mean = accelerator.gather(loss.detach()[None]).mean()
                logger.log(
                    {
                        "loss": loss_mean,
                        "grad_norm": grad_norm,
                        "lr": optimizer.param_groups[0]["lr"],
                        "epoch": state.epoch,
                    },
                    step=state.step,
                )
                progress.set_postfix(loss=f"{loss_mean.item():.4f}")
            if tokenizer is not None and args.sample_every and state.step % args.sample_every == 0:
                if accelerator.is_main_process:
                    (output / "samples").mkdir(parents=True, exist_ok=True)
                    k = int(batch["num_tokens"][0])
                    save_samples(
                        accelerator.unwrap_model(model),
                        tokenizer,
                        output / f"samples/step-{state.step}.png",
                        k,
                        args.seed,
                    )
            if state.step % args.save_every == 0 or state.step == args.max_steps:
                save_checkpoint(accelerator, output, state.step, args.total_limit)
            if state.step >= args.max_steps:
                break
        else:
            state.epoch += 1
            state.step_in_epoch = 0
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        final.save_pretrained(output / "final")
        write_model_card(output / "final", "mergear", training={"steps": state.step, **vars(args)})
    accelerator.end_training()


if __name__ == "__main__":
    main()
