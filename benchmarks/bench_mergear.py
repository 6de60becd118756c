"""MergeAR decoding speed and KV-cache memory: merge-pruning cache vs a dense cache, same model.

A LlamaGen-B-size MergeAR (random weights) decodes code maps token by token (teacher-forced, so both
caches see exactly the same sequence) whose duplicate pattern comes from real tokenizer outputs: the
bundled photo and crops of it encoded by a MergeVQ tokenizer at K=144 of L=256 (G+R) and K=256 of
L=1024 (G). Batch 1 and 16, with classifier-free guidance (batch doubled). All ratios from one run:
    python benchmarks/bench_mergear.py [--device cuda] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mergevq_hf import MergeARConfig, MergeARForCausalLM, MergeVQConfig, MergeVQModel
from mergevq_hf.image_utils import EXAMPLE_IMAGE, load_image

CASES = [("mergevq-gr-d64", 144), ("mergevq-g-d64", 256)]


def real_code_maps(preset: str, num_tokens: int, batch: int, device) -> torch.Tensor:
    """codes_L [batch, L] from a MergeVQ tokenizer on crops/flips of the bundled photo."""
    torch.manual_seed(0)
    tokenizer = MergeVQModel(MergeVQConfig.from_preset(preset)).to(device).eval()
    photo = load_image(EXAMPLE_IMAGE, 512)
    crops = []
    for i in range(batch):
        top, left = (i * 37) % 256, (i * 61) % 256
        crop = photo[:, top : top + 256, left : left + 256]
        crops.append(crop.flip(-1) if i % 2 else crop)
    with torch.inference_mode():
        enc = tokenizer.encode(torch.stack(crops).to(device), num_tokens=num_tokens)
        return tokenizer.unmerge(enc.indices, enc.source)


def decode(model, codes_l, num_tokens, prune, steps, device):
    batch = codes_l.shape[0]
    labels = torch.arange(batch) % model.config.num_classes
    prompt = torch.cat(
        [model.prompt_ids(labels, num_tokens), model.prompt_ids(torch.full_like(labels, 1000), num_tokens)]
    )
    fed = codes_l.repeat(2, 1).to(device)  # CFG: conditional and null-class halves
    capacity = 2 + codes_l.shape[1] if not prune else None
    cache = model.new_cache(prune=prune, initial_capacity=capacity)
    with torch.inference_mode():
        model(input_ids=prompt.to(device), cache=cache, logits_to_keep=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for j in range(steps):
            model(input_ids=fed[:, j : j + 1], cache=cache, logits_to_keep=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return {
        "tokens_per_s": batch * steps / seconds,  # generated image tokens per second (CFG pairs count once)
        "kv_bytes_allocated": cache.kv_bytes(allocated=True),
        "kv_bytes_used": cache.kv_bytes(allocated=False),
        "stored_per_sequence_mean": float(cache.num_stored.float().mean()),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--steps", type=int, default=0, help="decode steps (0 = the whole code map)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    for preset, num_tokens in CASES:
        tok_config = MergeVQConfig.from_preset(preset)
        num_positions = tok_config.num_positions
        config = MergeARConfig.from_preset("mergear-b", num_positions=num_positions)
        model = MergeARForCausalLM(config).to(device).eval()
        for batch in [int(b) for b in args.batches.split(",")]:
            codes_l = real_code_maps(preset, num_tokens, batch, device)
            steps = args.steps or num_positions
            distinct = torch.tensor([len(set(row[:steps].tolist())) for row in codes_l]).float()
            rows = {p: decode(model, codes_l, num_tokens, p, steps, device) for p in (True, False)}
            print(
                json.dumps(
                    {
                        "L": num_positions,
                        "K": num_tokens,
                        "batch": batch,
                        "cfg": True,
                        "steps": steps,
                        "duplicate_fraction": round(1 - float(distinct.mean()) / steps, 4),
                        "pruned": rows[True],
                        "dense": rows[False],
                        "speedup_tokens_per_s": rows[True]["tokens_per_s"] / rows[False]["tokens_per_s"],
                        "kv_allocated_ratio_dense_over_pruned": rows[False]["kv_bytes_allocated"]
                        / rows[True]["kv_bytes_allocated"],
                        "kv_used_ratio_dense_over_pruned": rows[False]["kv_bytes_used"] / rows[True]["kv_bytes_used"],
                    }
                )
            )


if __name__ == "__main__":
    main()
