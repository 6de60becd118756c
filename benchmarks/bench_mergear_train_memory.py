"""Peak memory of one MergeAR training step: the factorised heads' loss alone (what ``forward`` does now) vs.
also building the joint log-probabilities over all 2**code_dim codes in the same forward (what every forward
did before: a [B, T, 262144] float table for mergear-b).

Each measurement is one fresh process (peak resident set size, ``ru_maxrss``; on CUDA the allocator's peak);
the two variants alternate, ``--repeats`` times each, and the median and spread are printed:
    python benchmarks/bench_mergear_train_memory.py [--preset mergear-b] [--batch-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def one_step(preset: str, batch: int, num_positions: int, joint: bool, device: str) -> dict:
    import torch

    from mergevq_hf import MergeARConfig, MergeARForCausalLM

    torch.manual_seed(0)
    model = MergeARForCausalLM(MergeARConfig.from_preset(preset, num_positions=num_positions)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    codes = torch.randint(0, model.config.vocab_size_codes, (batch, num_positions), device=device)
    inputs = model.training_inputs(codes, torch.randint(0, 1000, (batch,)), 144)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = model(**inputs, output_joint_logits=joint)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    seconds = time.perf_counter() - start
    joint_shape = None if out.logits is None else list(out.logits.shape)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"peak_mib": peak, "before_step_mib": baseline, "seconds": seconds, "joint_shape": joint_shape}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mergear-b")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-positions", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", choices=["joint", "factors"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = one_step(args.preset, args.batch_size, args.num_positions, args.child == "joint", args.device)
        print(json.dumps(result))
        return
    results = {"joint": [], "factors": []}
    for _ in range(args.repeats):
        for variant in ("joint", "factors"):  # interleaved
            cmd = [sys.executable, __file__, "--child", variant, *sys.argv[1:]]
            line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[variant].append(json.loads(line))
    print(f"{args.preset}, batch {args.batch_size}, L={args.num_positions}, {args.device}, {args.repeats} runs each")
    for variant, runs in results.items():
        peaks = [r["peak_mib"] for r in runs]
        secs = [r["seconds"] for r in runs]
        print(
            f"  {variant:8s} peak {statistics.median(peaks):9.0f} MiB (spread {max(peaks) - min(peaks):6.0f}), "
            f"before step {statistics.median(r['before_step_mib'] for r in runs):7.0f} MiB, "
            f"step {statistics.median(secs):6.1f} s (spread {max(secs) - min(secs):5.1f}), "
            f"joint {runs[0]['joint_shape']}"
        )
    saved = statistics.median(r["peak_mib"] for r in results["joint"]) - statistics.median(
        r["peak_mib"] for r in results["factors"]
    )
    print(f"  peak saved by not building the joint table: {saved:.0f} MiB")


if __name__ == "__main__":
    main()
