"""Train (or fine-tune) a SourceRecoveryModel on its own, against a frozen tokenizer's code dataset.

    mergevq extract-codes --tokenizer runs/tok/final --dataset data/digits --output data/codes
    accelerate launch examples/train_source_recovery.py --codes data/codes --tokenizer runs/tok/final \
        --output-dir runs/recovery [--generator runs/random_ar/final] [--init-from runs/tok/final/source_recovery]

The model reads the K tokens exactly as a random-order generator presents them at generation time: in a new
random order per sample, as ±1 codes with their raster positions (first position of each merge group); the
target is the true source, re-indexed to that order. ``--generator`` (paper A.1: fine-tuning with a trained
generator) replaces the codes by what that generator samples for each token given the true earlier tokens
(teacher forcing in the same random order), so the recovery learns to read generated codes, not only encoded
ones. Same loop as the other scripts: checkpoints, ``--resume latest``, ``metrics.jsonl``, held-out position
accuracy, final ``save_pretrained`` with a model card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

from mergevq_hf import MergeVQConfig, RandomARForCausalLM, SourceRecoveryConfig, SourceRecoveryModel
from mergevq_hf.models.mergear.generation import SampleNoise, sample_code
from mergevq_hf.models.tokenizer.lfq import indices_to_codes
from mergevq_hf.training.checkpoint import TrainingState, register_for_checkpointing, resume_from
from mergevq_hf.training.codes import load_codes, pad_tokens
from mergevq_hf.training.loop import TrainingLoop
from mergevq_hf.training.metrics_log import MetricsLogger
from mergevq_hf.training.schedule import step_drop_lr


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codes", required=True, help="folder with train-*.parquet (and test-*.parquet) code shards")
    p.add_argument("--tokenizer", required=True, help="the frozen tokenizer the codes came from (its config)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--init-from", help="SourceRecoveryModel folder to fine-tune (e.g. the tokenizer's)")
    p.add_argument("--generator", help="trained RandomARForCausalLM: fine-tune on its teacher-forced codes")
    p.add_argument("--config-overrides", default="{}", help="JSON dict of SourceRecoveryConfig fields")
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-4, help="paper Table A2: AdamW (0.9, 0.95), lr 1e-4, wd 1e-2")
    p.add_argument("--lr-drop-steps", type=int, nargs="*", default=[])
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--total-limit", type=int, default=3)
    p.add_argument("--resume", help="'latest' or a checkpoint folder")
    TrainingLoop.add_arguments(p)
    return p.parse_args(argv)


def create_model(args, tokenizer_config: MergeVQConfig) -> SourceRecoveryModel:
    if args.init_from:
        model = SourceRecoveryModel.from_pretrained(args.init_from)
    else:
        fields = {"dim": 384, "num_heads": 8, **json.loads(args.config_overrides), "use_positions": True}
        model = SourceRecoveryModel(
            SourceRecoveryConfig(
                code_dim=tokenizer_config.code_dim, num_positions=tokenizer_config.num_positions, **fields
            )
        )
    if not model.config.use_positions:
        raise ValueError(f"{args.init_from} reads no token positions (use_positions=False); train a new model")
    return model


def shuffled(batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """tokens, positions [B, Kmax] in a new random order per sample (padding last) and the source [B, L]
    re-indexed to that order; plus the token mask."""
    tokens, positions, source, counts = batch["tokens"], batch["positions"], batch["source"], batch["num_tokens"]
    width = tokens.shape[1]
    valid = torch.arange(width, device=tokens.device)[None, :] < counts[:, None]
    keys = torch.rand(tokens.shape, generator=generator).to(tokens.device) + (~valid).float() * 2
    order = keys.argsort(dim=1)
    new_index = torch.empty_like(order).scatter_(1, order, torch.arange(width, device=order.device).expand_as(order))
    return tokens.gather(1, order), positions.gather(1, order), new_index.gather(1, source.long()), valid


@torch.no_grad()
def generator_codes(generator: RandomARForCausalLM, tokens, positions, counts, labels) -> torch.Tensor:
    """What ``generator`` samples for each token given the true earlier tokens in this order (teacher forcing):
    same layout as ``generate_random_order``'s sequence, CFG off, temperature 1."""
    cfg = generator.config
    batch, width = tokens.shape
    body = torch.stack([torch.full_like(tokens, cfg.position_instruction_id), tokens], 2).flatten(1)
    ids = torch.cat([generator.prompt_ids(labels, counts), body], 1)
    pos = torch.cat([torch.full((batch, 2), -1, device=tokens.device), positions.repeat_interleave(2, 1)], 1)
    hidden = generator(input_ids=ids, positions=pos, output_factor_logits=False).last_hidden_state
    at_instructions = hidden[:, cfg.num_start_tokens :: 2]  # [B, Kmax, C]
    return sample_code(generator, at_instructions, 1.0, batch, 1.0, 0, 1.0, SampleNoise(None, batch, tokens.device))


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output_dir)
    accelerator = Accelerator(
        project_config=ProjectConfiguration(project_dir=str(output)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(args.seed)
    tokenizer_config = MergeVQConfig.from_pretrained(args.tokenizer)
    model = create_model(args, tokenizer_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    train_set = load_codes(args.codes)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, collate_fn=pad_tokens
    )
    test_files = list(Path(args.codes).glob("test-*.parquet"))
    test_loader = None
    if test_files:
        test_loader = torch.utils.data.DataLoader(load_codes(args.codes, "test"), batch_size=256, collate_fn=pad_tokens)
    generator = None
    if args.generator:
        generator = RandomARForCausalLM.from_pretrained(args.generator).to(accelerator.device).eval()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    set_seed(args.seed, device_specific=True)
    state = TrainingState()
    register_for_checkpointing(accelerator, training=state)
    resumed = resume_from(accelerator, output, args.resume)
    if resumed:
        accelerator.print(f"resumed from {resumed} at step {state.step}")
    logger = MetricsLogger(accelerator, output / "metrics.jsonl")
    code_dim = tokenizer_config.code_dim

    def inputs(batch, rng=None):
        tokens, positions, source, valid = shuffled(batch, rng)
        if generator is not None:
            labels = batch["label"].masked_fill(batch["label"] < 0, generator.config.num_classes)
            tokens = generator_codes(generator, tokens, positions, batch["num_tokens"], labels)
        return dict(quantized=indices_to_codes(tokens, code_dim), positions=positions, source=source, token_mask=valid)

    @torch.no_grad()
    def heldout_accuracy() -> float:
        raw = accelerator.unwrap_model(model).eval()
        right = total = 0
        rng = torch.Generator().manual_seed(args.seed)
        for batch in test_loader:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            x = inputs(batch, rng)
            predicted = raw.predict_source(x["quantized"], x["token_mask"], positions=x["positions"])
            right += int((predicted == x["source"]).sum())
            total += x["source"].numel()
        raw.train()
        return right / total

    model.train()
    loop = TrainingLoop.from_args(accelerator, loader, state, args, desc="recovery")
    for batch in loop:
        loss = model(**inputs(batch)).loss
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        for group in optimizer.param_groups:
            group["lr"] = step_drop_lr(args.lr, state.step, args.lr_drop_steps)
        if loop.good_step(loss, grad_norm):  # the same decision on every process
            optimizer.step()
        optimizer.zero_grad()
        if not loop.step_completed():
            continue
        metrics = {}
        if loop.every(args.log_every):
            metrics.update(loss=accelerator.gather(loss.detach()[None]).mean(), grad_norm=grad_norm)
            metrics.update(loop.throughput())
        if test_loader is not None and (loop.every(args.eval_every) or state.step == args.max_steps):
            metrics["heldout_position_accuracy"] = heldout_accuracy()
        if metrics:
            logger.log({**metrics, "epoch": state.epoch}, step=state.step)

    loop.export(model, "source_recovery", vars(args))
    loop.finish()


if __name__ == "__main__":
    main()
