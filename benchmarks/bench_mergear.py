"""MergeAR decode steps: merge-pruning cache vs a dense cache, same model, same sequences, one process.

A LlamaGen-B-size MergeAR (``mergear-b``, random weights, float32) decodes code maps teacher-forced (both caches
see exactly the same tokens) whose duplicate pattern comes from the package's own tokenizers (random weights) on
crops of the bundled photo: K=144 of L=256 (G+R) and K=256 of L=1024 (G). Every setting uses classifier-free
guidance (rows = 2 x images). The caches are filled up to ``L - window`` in multi-token steps, then the last
``window`` positions are decoded one token per step, pruned and dense interleaved step by step (the order
alternates), so each step of one is timed next to the same step of the other.

Per setting it prints, for a decode step near the end of the code map: the bytes the step must read (weights
without the embedding tables + the KV slots it attends, rows x visible slots) for dense and pruned, their ratio,
the measured speed ratio (median over the paired steps, with its interquartile range), each path's seconds per
step and the fraction of the machine's measured read bandwidth it reaches; and the pruned cache's allocated vs
used KV bytes. A third decoder runs the same rows at the start of the code map (no KV to speak of), interleaved
with the two: step time minus its time is the part that reads the cache, compared with the KV bytes ratio (on
a CPU the weight matmuls of many rows are compute-bound, so the whole-step speed ratio stays below the bytes
ratio even when the KV part follows it). A last setting, rows with K = 36, 36, 36, 256, shows allocation for a
mixed-K batch.

    python benchmarks/bench_mergear.py [--device cuda] [--window 24] [--settings 0,1,2,3,4]
"""

from __future__ import annotations

import argparse
import json

import torch

from mergevq_hf import MergeARConfig, MergeARForCausalLM, MergeVQConfig, MergeVQModel
from mergevq_hf.image_utils import EXAMPLE_IMAGE, load_image
from timing import interleaved, memory_read_bandwidth, ratio_spread, summary

# (name, tokenizer preset, K of each image)
SETTINGS = [
    ("1 image, L=256", "mergevq-gr-d64", [144]),
    ("8 images, L=256", "mergevq-gr-d64", [144] * 8),
    ("1 image, L=1024", "mergevq-g-d64", [256]),
    ("16 images, L=1024 (KV-dominated)", "mergevq-g-d64", [256] * 16),
    ("4 images, mixed K, L=256", "mergevq-gr-d64", [36, 36, 36, 256]),
]
_TOKENIZERS = {}


def real_code_maps(preset: str, num_tokens: list[int], device) -> torch.Tensor:
    """codes_L [images, L] from a MergeVQ tokenizer (random weights) on crops/flips of the bundled photo."""
    if preset not in _TOKENIZERS:
        torch.manual_seed(0)
        _TOKENIZERS[preset] = MergeVQModel(MergeVQConfig.from_preset(preset)).to(device).eval()
    tokenizer = _TOKENIZERS[preset]
    photo = load_image(EXAMPLE_IMAGE, 512)
    maps = []
    with torch.inference_mode():
        for i, k in enumerate(num_tokens):
            top, left = (i * 37) % 256, (i * 61) % 256
            crop = photo[:, top : top + 256, left : left + 256]
            crop = crop.flip(-1) if i % 2 else crop
            enc = tokenizer.encode(crop[None].to(device), num_tokens=k)
            maps.append(tokenizer.unmerge(enc.indices, enc.source))
    return torch.cat(maps)


def weight_bytes(model) -> int:
    """Bytes of the parameters a decode step reads: all but the embedding tables (one row each is read)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in embeddings)


def slot_bytes(model) -> int:
    """Bytes of one KV slot of one row over all layers (keys + values)."""
    config = model.config
    return 2 * config.num_hidden_layers * config.hidden_size * next(model.parameters()).element_size()


class Decoder:
    """One cache, filled to ``fill`` positions, then advanced one teacher-forced token per call."""

    def __init__(self, model, prompt, fed, num_tokens, prune, fill, chunk=16):
        self.model, self.fed, self.visible = model, fed, []
        self.cache = model.new_cache(prune=prune, num_tokens=num_tokens)
        with torch.inference_mode():
            model(input_ids=torch.cat([prompt, fed[:, : min(fill, chunk)]], 1), cache=self.cache, logits_to_keep=1)
            for a in range(chunk, fill, chunk):
                model(input_ids=fed[:, a : min(a + chunk, fill)], cache=self.cache, logits_to_keep=1)
        self.position = fill

    def step(self):
        with torch.inference_mode():
            self.model(input_ids=self.fed[:, self.position : self.position + 1], cache=self.cache, logits_to_keep=1)
        self.visible.append(self.cache.step_slots_read)  # rows x visible slots, summed over the row groups
        self.position += 1


def run_setting(name, preset, ks, window, device, bandwidth, models):
    num_positions = MergeVQConfig.from_preset(preset).num_positions
    if num_positions not in models:
        torch.manual_seed(0)
        config = MergeARConfig.from_preset("mergear-b", num_positions=num_positions)
        models[num_positions] = MergeARForCausalLM(config).to(device).eval()
    model = models[num_positions]
    codes_l = real_code_maps(preset, ks, device)
    images = codes_l.shape[0]
    labels = torch.arange(images) % model.config.num_classes
    num_tokens = torch.tensor(ks)
    prompt = torch.cat(
        [model.prompt_ids(labels, num_tokens), model.prompt_ids(torch.full_like(labels, 1000), num_tokens)]
    ).to(device)
    fed = codes_l.repeat(2, 1)  # CFG: conditional and null-class halves
    rows = fed.shape[0]
    fill = num_positions - window - 1  # one warm-up step, then `window` timed steps
    decoders = {
        "pruned": Decoder(model, prompt, fed, num_tokens.repeat(2), True, fill),  # one K per row
        "dense": Decoder(model, prompt, fed, num_tokens, False, fill),
        # the same rows at the start of the code map: the cost of a step that reads (almost) no KV
        "no_kv": Decoder(model, prompt, fed, num_tokens, False, 1),
    }
    # one untimed warm-up step each, then `window` paired steps, the order alternating
    seconds = interleaved({key: decoder.step for key, decoder in decoders.items()}, window, device, warmup=1)
    weights, per_slot = weight_bytes(model), slot_bytes(model)
    result = {"setting": name, "L": num_positions, "K": ks if len(set(ks)) > 1 else ks[0], "rows": rows}
    distinct = [len(set(row.tolist())) for row in codes_l]
    result["duplicate_fraction"] = round(1 - sum(distinct) / (images * num_positions), 3)
    read = {}
    for key in ("pruned", "dense"):
        decoder = decoders[key]
        kv = per_slot * sum(decoder.visible) / len(decoder.visible)
        read[key] = weights + kv
        timing = summary(seconds[key])
        result[key] = {
            "bytes_read_per_step": round(read[key]),
            "kv_share": round(kv / read[key], 3),
            "seconds_per_step": {k: round(v, 5) for k, v in timing.items() if k != "n"},
            "bandwidth_fraction": round(read[key] / timing["median"] / bandwidth, 3),
            "kv_bytes_allocated": decoder.cache.kv_bytes(allocated=True),
            "kv_bytes_used": decoder.cache.kv_bytes(allocated=False),
        }
    speed = ratio_spread(seconds["dense"], seconds["pruned"])  # > 1: pruned faster
    result["bytes_ratio_dense_over_pruned"] = round(read["dense"] / read["pruned"], 3)
    result["speed_ratio_pruned_over_dense"] = {k: round(v, 3) for k, v in speed.items() if k != "n"}
    result["speed_ratio_over_bytes_ratio"] = round(speed["median"] / (read["dense"] / read["pruned"]), 3)
    # the part of a step that reads the KV cache: step time minus the no-KV step's (paired by round)
    kv_seconds = {key: [a - b for a, b in zip(seconds[key], seconds["no_kv"])] for key in ("pruned", "dense")}
    kv_read = {key: read[key] - weights for key in read}
    result["no_kv_seconds_per_step"] = round(summary(seconds["no_kv"])["median"], 5)
    result["kv_part_speed_ratio_pruned_over_dense"] = {
        k: round(v, 3) for k, v in ratio_spread(kv_seconds["dense"], kv_seconds["pruned"]).items() if k != "n"
    }
    result["kv_bytes_ratio_dense_over_pruned"] = round(kv_read["dense"] / kv_read["pruned"], 3)
    pruned = decoders["pruned"].cache
    block = rows * per_slot * pruned.block_size
    result["pruned_allocated_over_used_plus_block"] = round(
        pruned.kv_bytes(allocated=True) / (pruned.kv_bytes(allocated=False) + block), 3
    )
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--window", type=int, default=24, help="timed decode steps per setting (paired)")
    parser.add_argument("--settings", default=",".join(str(i) for i in range(len(SETTINGS))))
    args = parser.parse_args()
    device = torch.device(args.device)
    bandwidth = memory_read_bandwidth(device=device)
    print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "read_bandwidth_GBps": round(bandwidth / 1e9, 2)}))  # fmt: skip
    models = {}
    for index in (int(i) for i in args.settings.split(",")):
        print(json.dumps(run_setting(*SETTINGS[index], args.window, device, bandwidth, models)), flush=True)


if __name__ == "__main__":
    main()
