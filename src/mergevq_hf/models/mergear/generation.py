"""MergeAR sampling loop in three small functions (prefill, decode one token, decode n tokens) over a
``MergePruningCache``, with classifier-free guidance by doubling the batch and per-sample generators."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .cache import MergePruningCache


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set whose probability reaches ``top_p``."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generators: Sequence[torch.Generator | None] | None = None,
) -> torch.Tensor:
    """logits [B, V] -> tokens [B]. ``temperature=0`` is greedy. Sampling uses the exponential race
    (argmax p / E, E ~ Exp(1)) with noise drawn per row from ``generators[b]``, so a row's token depends only
    on its own generator, not on the rest of the batch."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    if generators is None:
        noise = torch.empty_like(probs).exponential_()
    else:
        noise = torch.stack(
            [torch.empty(probs.shape[-1], device=probs.device).exponential_(generator=g) for g in generators]
        )
    return (probs / noise).argmax(-1)


def _guided(factor_logits, guidance_scale: float, batch: int):
    if guidance_scale == 1.0 or factor_logits[0].shape[0] == batch:
        return [logit[:batch] for logit in factor_logits]
    return [logit[batch:] + guidance_scale * (logit[:batch] - logit[batch:]) for logit in factor_logits]


def _sample_code(model, factor_logits, guidance_scale, batch, temperature, top_k, top_p, generators):
    """Sample each factor (filters apply per factor) and assemble the code."""
    code, offset = 0, 0
    for bits, logit in zip(model.factor_bits, _guided(factor_logits, guidance_scale, batch)):
        code = code + (sample(logit[:, -1], temperature, top_k, top_p, generators) << offset)
        offset += bits
    return code


def prefill(model, prompt_ids: torch.Tensor, cache: MergePruningCache):
    return model(input_ids=prompt_ids, past_key_values=cache, logits_to_keep=1).factor_logits


def decode_one_token(model, codes: torch.Tensor, cache: MergePruningCache):
    return model(input_ids=codes[:, None], past_key_values=cache, logits_to_keep=1).factor_logits


@torch.no_grad()
def generate_codes(
    model,
    class_labels,
    num_tokens,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generators: Sequence[torch.Generator | None] | None = None,
    cache: MergePruningCache | None = None,
    progress=None,
) -> torch.LongTensor:
    """Generate code maps ``codes_L`` [B, L] in raster order.

    class_labels: ints [B]; num_tokens: K (int or [B]) given to the merge-instruction token;
    guidance_scale != 1 runs the null class alongside (batch doubled in the same cache);
    progress: optional callable wrapping the step iterator (e.g. a tqdm factory).
    """
    labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
    batch = labels.shape[0]
    if generators is not None and len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for {batch} samples")
    prompt = model.prompt_ids(labels, num_tokens)
    if guidance_scale != 1.0:
        null = torch.full_like(labels, model.config.num_classes)
        prompt = torch.cat([prompt, model.prompt_ids(null, num_tokens)])
    cache = cache if cache is not None else model.new_cache()
    num_positions = model.config.num_positions
    codes = torch.empty(batch, num_positions, dtype=torch.long, device=prompt.device)
    factor_logits = prefill(model, prompt, cache)
    steps = range(num_positions)
    for j in progress(steps) if progress is not None else steps:
        codes[:, j] = _sample_code(model, factor_logits, guidance_scale, batch, temperature, top_k, top_p, generators)
        if j + 1 < num_positions:
            fed = codes[:, j] if guidance_scale == 1.0 else codes[:, j].repeat(2)
            factor_logits = decode_one_token(model, fed, cache)
    return codes
