"""End-to-end images/s of ``MergeVQPipeline`` with each of its three generators: MergeAR (raster, duplicates pruned),
the plain raster baseline (``prune_duplicates=False``) and the random-order generator with source recovery; class
labels in, decoded images out (``output_type="pt"``), classifier-free guidance on.

Random weights at paper sizes by default (tokenizer ``mergevq-gr-d64`` at 256 px, L=256, K=144; generators
``mergear-<size>`` / ``random-ar-<size>``; speed does not depend on the weights). For every batch size the three
pipelines run interleaved (A B C, C B A, ...), ``--repeats`` timed calls each after one untimed call; printed: median
seconds per call with the interquartile range, images/s, and on CUDA the peak allocated memory::

    python benchmarks/bench_pipeline.py [--device cuda] [--size b] [--batch-sizes 1,64] [--repeats 3]
        [--guidance-scale 2.0] [--num-inference-steps 64] [--output-json runs/bench-pipeline.json]

``--size tiny`` uses the test presets (32 px) to check the script on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import interleaved, summary  # noqa: E402

GENERATORS = ("mergear", "mergear-dense", "random-ar")
SIZES = ("tiny", "b", "l", "xl")


def build_pipelines(size: str, device: str) -> dict:
    from mergevq_hf import (
        MergeARConfig,
        MergeARForCausalLM,
        MergeVQConfig,
        MergeVQModel,
        MergeVQPipeline,
        RandomARConfig,
        RandomARForCausalLM,
        SourceRecoveryConfig,
        SourceRecoveryModel,
    )

    tiny = size == "tiny"
    tokenizer = MergeVQModel(MergeVQConfig.from_preset("tiny" if tiny else "mergevq-gr-d64")).eval()
    shape = dict(num_positions=tokenizer.config.num_positions, code_dim=tokenizer.config.code_dim)
    recovery_size = dict(dim=32, num_heads=2) if tiny else {}
    recovery = SourceRecoveryModel(SourceRecoveryConfig(**shape, use_positions=True, **recovery_size)).eval()
    mergear_preset = "tiny" if tiny else f"mergear-{size}"
    random_preset = "tiny" if tiny else f"random-ar-{size}"
    mergear = MergeARForCausalLM(MergeARConfig.from_preset(mergear_preset, num_positions=shape["num_positions"]))
    dense = MergeARForCausalLM(
        MergeARConfig.from_preset(mergear_preset, num_positions=shape["num_positions"], prune_duplicates=False)
    )
    dense.load_state_dict(mergear.state_dict())  # the same network; only the cache rule differs
    random_ar = RandomARForCausalLM(RandomARConfig.from_preset(random_preset, num_positions=shape["num_positions"]))
    pipes = {
        "mergear": MergeVQPipeline(tokenizer, mergear.eval()),
        "mergear-dense": MergeVQPipeline(tokenizer, dense.eval()),
        "random-ar": MergeVQPipeline(tokenizer, random_ar.eval(), recovery),
    }
    for pipe in pipes.values():
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
    return pipes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="b", help=f"generator size, one of {SIZES} (tiny: test presets)")
    parser.add_argument("--batch-sizes", default="1,64", help="comma-separated images per call")
    parser.add_argument("--generators", default=",".join(GENERATORS), help=f"comma-separated, from {GENERATORS}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--num-inference-steps", type=int, default=None, help="random-order generator steps")
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args(argv)
    generators = [g for g in args.generators.split(",") if g]
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if args.size not in SIZES:
        parser.error(f"--size {args.size!r}; allowed: {SIZES}")
    if not generators or any(g not in GENERATORS for g in generators):
        parser.error(f"--generators {args.generators!r}; allowed: comma-separated from {GENERATORS}")
    if not batch_sizes or min(batch_sizes) < 1 or args.repeats < 1:
        parser.error(f"--batch-sizes {args.batch_sizes!r} and --repeats {args.repeats} must be >= 1")
    if args.guidance_scale < 1:
        parser.error(f"--guidance-scale must be >= 1 (1 = off), got {args.guidance_scale}")

    pipes = {name: pipe for name, pipe in build_pipelines(args.size, args.device).items() if name in generators}
    tokens = pipes[generators[0]].tokenizer.config
    print(
        f"device={args.device} torch={torch.__version__} size={args.size} L={tokens.num_positions} "
        f"K={tokens.num_tokens} guidance_scale={args.guidance_scale} repeats={args.repeats}"
    )
    results = {"device": args.device, "torch": torch.__version__, "size": args.size, "results": []}
    cuda = args.device.startswith("cuda")
    num_classes = min(pipe.transformer.config.num_classes for pipe in pipes.values())
    for batch in batch_sizes:
        labels = [i % num_classes for i in range(batch)]

        def call(name, labels=labels):
            extra = {"num_inference_steps": args.num_inference_steps} if name == "random-ar" else {}
            return lambda: pipes[name](labels, guidance_scale=args.guidance_scale, output_type="pt", **extra)

        if cuda:
            torch.cuda.reset_peak_memory_stats(args.device)
        with torch.inference_mode():
            times = interleaved({name: call(name) for name in pipes}, args.repeats, device=args.device)
        for name, values in times.items():
            s = summary(values)
            row = {"generator": name, "batch": batch, **s, "images_per_s": batch / s["median"]}
            if cuda:
                row["peak_allocated_mib_all_variants"] = torch.cuda.max_memory_allocated(args.device) / 2**20
            results["results"].append(row)
            print(
                f"B={batch:>3} {name:>14}: {s['median']:8.3f} s (IQR {s['q1']:.3f}-{s['q3']:.3f}) "
                f"{row['images_per_s']:8.2f} img/s"
            )
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
