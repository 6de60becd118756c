"""MergeAR end-to-end generation speed: the default (dynamic) decode path vs the static-shape path, optionally
compiled (``torch.compile(fullgraph=True, mode=...)``; ``--compile-mode reduce-overhead`` = CUDA graphs on a GPU).

A LlamaGen-B-size MergeAR (``mergear-b``, random weights) samples whole code maps with ``generate_codes``
(CFG 2.0, temperature 1.0); the variants run interleaved, ``--repeats`` times each after a warm-up (the warm-up
of a compiled variant includes its compilation), and print images/s and generated tokens/s as median and
interquartile range, plus whether every variant sampled the same codes as the dynamic path.

    python benchmarks/bench_mergear_generation.py [--device cuda] [--images 8] [--L 256] [--K 144] \
        [--compile-mode reduce-overhead] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json

import torch

from mergevq_hf import MergeARConfig, MergeARForCausalLM
from mergevq_hf.models.mergear import generate_codes
from timing import interleaved, summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--L", type=int, default=256, help="code map positions (256 = 16x16)")
    parser.add_argument("--K", type=int, default=144, help="merged tokens given to the merge instruction")
    parser.add_argument("--compile-mode", default=None, help="also time the static step compiled with this mode")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MergeARForCausalLM(MergeARConfig.from_preset("mergear-b", num_positions=args.L)).to(device).eval()
    labels = list(range(args.images))
    codes = {}

    def run(name, **kwargs):
        def call():
            generators = [torch.Generator(device).manual_seed(s) for s in range(args.images)]
            codes[name] = generate_codes(model, labels, args.K, guidance_scale=2.0, generators=generators, **kwargs)

        return call

    variants = {"dynamic": run("dynamic"), "static": run("static", static=True)}
    if args.compile_mode:
        variants["compiled"] = run("compiled", compile_options={"mode": args.compile_mode})
    seconds = interleaved(variants, args.repeats, device)
    report = {"device": str(device), "threads": torch.get_num_threads(), "images": args.images, "L": args.L,
              "K": args.K, "cfg": 2.0}  # fmt: skip
    for name in variants:
        timing = summary(seconds[name])
        report[name] = {
            "images_per_s": round(args.images / timing["median"], 3),
            "tokens_per_s": round(args.images * args.L / timing["median"], 1),
            "tokens_per_s_iqr": [round(args.images * args.L / timing[q], 1) for q in ("q3", "q1")],
            "same_codes_as_dynamic": bool(torch.equal(codes[name], codes["dynamic"])),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
