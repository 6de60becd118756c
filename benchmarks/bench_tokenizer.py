"""Tokenizer throughput at K = L vs merged K, and memory of the exact entropy loss vs the naive formula.

Random weights (speed does not depend on them). All ratios come from one run of this script; the K values are
timed interleaved (call by call), each ``--repeats`` times, and printed as median with interquartile range:
    python benchmarks/bench_tokenizer.py [--device cuda] [--batch 4] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch

from mergevq_hf import MergeVQConfig, MergeVQModel
from mergevq_hf.models.tokenizer.lfq import entropy_terms, entropy_terms_naive
from timing import interleaved, peak_memory, ratio_spread, summary, synchronize

CASES = [("mergevq-gr-d64", [256, 144]), ("mergevq-g-d64", [1024, 256])]


def throughput(preset, ks, device, batch, repeats):
    """Encode and decode images/s at each K; the K values interleaved call by call, ``repeats`` timed calls each
    (after one warm-up), median and interquartile range."""
    torch.manual_seed(0)
    model = MergeVQModel(MergeVQConfig.from_preset(preset)).to(device).eval()
    pixels = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    variants = {}
    with torch.inference_mode():
        for k in ks:
            enc = model.encode(pixels, num_tokens=k)
            codes = model.unmerge(enc.indices, enc.source)
            variants[f"encode K={k}"] = lambda k=k: model.encode(pixels, num_tokens=k)
            variants[f"decode K={k}"] = lambda codes=codes: model.decode(codes)
        seconds = interleaved(variants, repeats, device)
    rows = []
    for k in ks:
        row = {"preset": preset, "K": k}
        for stage in ("encode", "decode"):
            timing = summary(seconds[f"{stage} K={k}"])
            iqr = [batch / timing["q3"], batch / timing["q1"]]
            row[f"{stage}_img_s"] = {"median": batch / timing["median"], "iqr": iqr}
            base, this = seconds[f"{stage} K={ks[0]}"], seconds[f"{stage} K={k}"]
            row[f"{stage}_speedup_vs_K={ks[0]}"] = ratio_spread(base, this)
        rows.append(row)
    return rows


def _entropy_peak(kind, num_tokens, code_dim, device_name, queue):
    device = torch.device(device_name)
    torch.manual_seed(0)
    latent = (torch.randn(num_tokens, code_dim, device=device) * 0.01).requires_grad_()
    fn = entropy_terms if kind == "bounded" else entropy_terms_naive

    def run():
        start = time.perf_counter()
        per_sample, codebook = fn(latent)
        (per_sample - codebook).backward()
        synchronize(device)
        return per_sample, codebook, time.perf_counter() - start

    (per_sample, codebook, seconds), peak = peak_memory(run, device)
    value = float((per_sample - codebook).detach())
    queue.put({"kind": kind, "peak_bytes": peak, "seconds": seconds, "value": value})


def entropy_memory(num_tokens, code_dim, device):
    """Forward + backward of (per-sample entropy - codebook entropy), each in a fresh process."""
    ctx = mp.get_context("spawn")
    results = {}
    for kind in ("naive", "bounded"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_entropy_peak, args=(kind, num_tokens, code_dim, str(device), queue))
        proc.start()
        results[kind] = queue.get()
        proc.join()
    results["memory_ratio_naive_over_bounded"] = results["naive"]["peak_bytes"] / max(
        results["bounded"]["peak_bytes"], 1
    )
    results["abs_difference"] = abs(results["naive"]["value"] - results["bounded"]["value"])
    results["speed_ratio_naive_over_bounded"] = results["naive"]["seconds"] / results["bounded"]["seconds"]
    results["tokens"], results["code_dim"] = num_tokens, code_dim
    return results


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items() if k != "n"}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 3) if isinstance(value, float) else value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--entropy-tokens", type=int, default=4 * 144, help="B*K tokens in the entropy benchmark")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    for preset, ks in [] if args.skip_throughput else CASES:
        for row in throughput(preset, ks, device, args.batch, args.repeats):
            print(json.dumps(_rounded(row)))
    print(json.dumps(entropy_memory(args.entropy_tokens, 18, device)))


if __name__ == "__main__":
    main()
