"""Random-order sampling with parallel decoding (RandAR's schedule), classifier-free guidance and a KV cache.

One call generates, per image, K codes and the K raster positions they go to:

1. positions: K distinct positions drawn from the model's position prior for this K (Gumbel top-k on
   ``log position_counts[K]``), then put in a uniformly random order (as in training);
2. steps: after step s of S, ``n_s = min(K, int((1 - cos(pi/2 (s+1)/S)) K + 1))`` tokens are decoded (made
   strictly increasing, ending at K); S = K is one token per step;
3. each step appends the position instructions of its tokens as queries; their outputs are sampled together;
   the next step first rewrites the cache after the step's first query into the training layout
   ``x_1, P_2, x_2, ..., P_n, x_n`` and appends the next queries, so the cache always holds exactly the sequence
   the model was trained on (RandAR's scheme);
4. CFG: the null class runs in the same batch; the scale rises linearly from 1 to ``guidance_scale`` with the
   fraction of tokens decoded (``guidance_schedule="constant"`` keeps it fixed).

Randomness: one :class:`SampleNoise` stream per image (positions, order and every code), so an image depends only
on its seed, label, K and step count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.utils import ModelOutput

from ..mergear.generation import SampleNoise, sample_code

GUIDANCE_SCHEDULES = ("linear", "constant")


@dataclass
class RandomAROutput(ModelOutput):
    """codes [B, K]: the generated codes in generation order; positions [B, K]: the raster position of each;
    num_steps: forward passes after the prompt (= len(schedule))."""

    codes: torch.LongTensor | None = None
    positions: torch.LongTensor | None = None
    num_steps: int | None = None


def decode_schedule(num_tokens: int, num_steps: int | None = None) -> list[int]:
    """Tokens decoded after each step (RandAR's cosine schedule): strictly increasing, last = K.
    ``num_steps`` None or >= K: one token per step."""
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens={num_tokens!r}; allowed: an integer >= 1")
    if num_steps is None or num_steps >= num_tokens:
        return list(range(1, num_tokens + 1))
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_inference_steps={num_steps!r}; allowed: an integer >= 1")
    done, out = 0, []
    for s in range(num_steps):
        n = min(num_tokens, int((1 - math.cos(math.pi / 2 * (s + 1) / num_steps)) * num_tokens + 1))
        n = max(n, done + 1)  # at least one token per step
        n = min(n, num_tokens - (num_steps - 1 - s))  # ... and room for one per remaining step
        out.append(n)
        done = n
    return out


def sample_positions(model, num_tokens: int, noise: SampleNoise) -> torch.LongTensor:
    """[B, K] distinct positions per image from the model's prior for this K, in a uniformly random order.

    The prior is ``position_counts[K]`` (the nearest K with counts when this K was never seen; uniform when no
    counts exist). Drawn without replacement by Gumbel top-k, then shuffled with the same image's stream."""
    counts = model.position_counts.float()
    seen = (counts.sum(1) > 0).nonzero().flatten()
    length = counts.shape[1]
    if seen.numel():
        nearest = seen[(seen - num_tokens).abs().argmin()]
        prior = counts[nearest] / counts[nearest].sum()
    else:
        prior = torch.full((length,), 1.0 / length, device=counts.device)
    scores = torch.log(prior.clamp_min(1e-12)).to(noise.keys.device) + noise.gumbel(length)
    chosen = scores.topk(num_tokens, dim=1).indices
    order = noise.uniform(num_tokens).argsort(dim=1)
    return chosen.gather(1, order)


@torch.no_grad()
def generate_random_order(
    model,
    class_labels,
    num_tokens: int,
    num_inference_steps: int | None = None,
    guidance_scale: float = 1.0,
    guidance_schedule: str = "linear",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generators: Sequence[torch.Generator] | torch.Generator | None = None,
    positions: torch.Tensor | None = None,
    progress=None,
) -> RandomAROutput:
    """Generate K codes and their positions per label (see the module docstring).

    class_labels: ints [B]; num_tokens: K (one int for the batch); num_inference_steps: S (None = K, one token
    per step); positions: optional [B, K] positions to fill in this order (default: drawn from the prior);
    progress: optional callable wrapping the step iterator (e.g. a tqdm factory).
    """
    cfg = model.config
    labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
    batch = labels.shape[0]
    if batch == 0:
        raise ValueError("class_labels is empty; give at least one label")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or not 1 <= num_tokens <= cfg.num_positions:
        raise ValueError(f"num_tokens={num_tokens!r}; allowed: one integer in 1..{cfg.num_positions} (L)")
    if guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance_schedule={guidance_schedule!r}; allowed: {GUIDANCE_SCHEDULES}")
    schedule = decode_schedule(num_tokens, num_inference_steps)
    device = model.class_embedding.weight.device
    prompt = model.prompt_ids(labels, num_tokens)
    noise = SampleNoise(generators, batch, device)
    if positions is None:
        positions = sample_positions(model, num_tokens, noise)
    elif tuple(positions.shape) != (batch, num_tokens) or positions.min() < 0 or positions.max() >= cfg.num_positions:
        raise ValueError(f"positions must be [{batch}, {num_tokens}] in 0..{cfg.num_positions - 1}")
    positions = positions.to(device).long()
    guided = guidance_scale != 1.0
    if guided:
        prompt = torch.cat([prompt, model.prompt_ids(torch.full_like(labels, cfg.num_classes), num_tokens)])
    rows = prompt.shape[0]
    row_positions = positions.repeat(rows // batch, 1)
    instruction = torch.full((rows, 1), cfg.position_instruction_id, dtype=torch.long, device=device)

    codes = torch.empty(batch, num_tokens, dtype=torch.long, device=device)
    cache = DynamicCache()
    # first step: start tokens + the queries of the first n_0 tokens
    first = schedule[0]
    input_ids = torch.cat([prompt, instruction.expand(-1, first)], dim=1)
    input_pos = torch.cat([torch.full_like(prompt, -1), row_positions[:, :first]], dim=1)
    committed = prompt.shape[1]  # cache length holding exactly the training-layout prefix (+ the first query)
    done = 0
    steps = range(len(schedule))
    for s in progress(steps) if progress is not None else steps:
        n = schedule[s] - done
        out = model(input_ids=input_ids, positions=input_pos, cache=cache, logits_to_keep=n, output_factor_logits=False)
        scale = guidance_scale
        if guided and guidance_schedule == "linear":
            scale = 1.0 + (guidance_scale - 1.0) * done / num_tokens
        # factor by factor (next-sub-token prediction: factor 1 given the sampled factor 0 of the same query)
        new = sample_code(model, out.last_hidden_state, scale, batch, temperature, top_k, top_p, noise)
        codes[:, done : done + n] = new
        if s + 1 == len(schedule):
            break
        # keep the first query P_done, rewrite the rest as x_done, P, x, ..., then append the next queries
        surplus = cache.get_seq_length() - (committed + 1)
        if surplus:  # a negative argument removes that many entries, on every supported transformers version
            cache.crop(-surplus)
        m = schedule[s + 1] - schedule[s]
        fed = new.repeat(rows // batch, 1)
        body_ids = torch.stack([instruction.expand(-1, n), fed], dim=2).flatten(1)[:, 1:]
        step_pos = row_positions[:, done : done + n]
        body_pos = torch.stack([step_pos, step_pos], dim=2).flatten(1)[:, 1:]
        next_pos = row_positions[:, done + n : done + n + m]
        input_ids = torch.cat([body_ids, instruction.expand(-1, m)], dim=1)
        input_pos = torch.cat([body_pos, next_pos], dim=1)
        committed += 2 * n  # P_done..x_{done+n-1} are now in the training layout
        done += n
    return RandomAROutput(codes=codes, positions=positions, num_steps=len(schedule))
