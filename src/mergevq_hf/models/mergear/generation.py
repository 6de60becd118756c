"""MergeAR sampling loop in three small functions (prefill, decode one token, decode n tokens) over a
``MergePruningCache``, with classifier-free guidance by doubling the batch and per-sample random streams.

Randomness: every sample owns a counter-based stream (:class:`SampleNoise`): one 63-bit key is drawn from the
sample's ``torch.Generator`` once, on that generator's device (a CPU generator with CUDA logits is fine), and
every later draw is a hash of (key, counter) computed on the logits' device for the whole batch at once. A
sample's codes therefore depend only on its generator and label, not on the batch, and not on the device.
"""

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


_MASK64 = (1 << 64) - 1


def _int64(value: int) -> int:
    """An unsigned 64-bit constant as the signed int64 torch stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _int64(0x9E3779B97F4A7C15), _int64(0xBF58476D1CE4E5B9), _int64(0x94D049BB133111EB)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors (wrapping arithmetic; logical shifts emulated with masks)."""

    def shr(v, bits):
        return (v >> bits) & ((1 << (64 - bits)) - 1)

    x = x + _GOLDEN
    x = (x ^ shr(x, 30)) * _MIX1
    x = (x ^ shr(x, 27)) * _MIX2
    return x ^ shr(x, 31)


class SampleNoise:
    """Independent, reproducible random streams, one per sample, drawn for the whole batch without a loop.

    generators: one ``torch.Generator`` per sample (any device), a single generator for all, or None (the
    global RNG). Each sample's key is drawn once here; :meth:`gumbel` then hashes (key, counter) on ``device``.
    """

    def __init__(self, generators, batch: int, device: torch.device | str | None = None):
        if generators is None or isinstance(generators, torch.Generator):
            keys = torch.randint(0, 2**63 - 1, (batch,), generator=generators, device=_device_of(generators))
        else:
            generators = list(generators)
            if len(generators) != batch:
                raise ValueError(f"got {len(generators)} generators for {batch} samples")
            keys = torch.stack(
                [torch.randint(0, 2**63 - 1, (), generator=g, device=_device_of(g)).cpu() for g in generators]
            )
        self.keys = _splitmix64(keys.to(device))  # drawn where the generator lives, moved to the logits
        self.counter = 0

    def uniform(self, columns: int) -> torch.Tensor:
        """[B, columns] float32 uniform in (0, 1), the next ``columns`` values of every sample's stream."""
        index = torch.arange(self.counter, self.counter + columns, device=self.keys.device)
        self.counter += columns
        bits = _splitmix64(self.keys[:, None] ^ _splitmix64(index)[None, :])
        # top 24 bits -> (0, 1): (n + 0.5) / 2^24, exactly representable in float32
        return (((bits >> 40) & 0xFFFFFF).float() + 0.5) / float(1 << 24)

    def gumbel(self, columns: int) -> torch.Tensor:
        return -torch.log(-torch.log(self.uniform(columns)))


def _device_of(generator) -> torch.device:
    return generator.device if isinstance(generator, torch.Generator) else torch.device("cpu")


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generators: SampleNoise | Sequence[torch.Generator] | torch.Generator | None = None,
) -> torch.Tensor:
    """logits [B, V] -> tokens [B]. ``temperature=0`` is greedy. Sampling is the Gumbel-max race
    (argmax of filtered logits / temperature + Gumbel noise) with the noise of each row drawn from that row's
    stream (a :class:`SampleNoise`, or generators from which one is made), for the whole batch at once."""
    if temperature == 0:
        return logits.argmax(-1)
    if not isinstance(generators, SampleNoise):
        generators = SampleNoise(generators, logits.shape[0], logits.device)
    filtered = filter_logits(logits.float() / temperature, top_k, top_p)
    return (filtered + generators.gumbel(logits.shape[-1])).argmax(-1)


def _guided(logit: torch.Tensor, guidance_scale: float, batch: int) -> torch.Tensor:
    if guidance_scale == 1.0 or logit.shape[0] == batch:
        return logit[:batch]
    return logit[batch:] + guidance_scale * (logit[:batch] - logit[batch:])


def sample_code(model, hidden, guidance_scale, batch, temperature=1.0, top_k=0, top_p=1.0, noise=None):
    """hidden [R, m, C] (decoder output before the final norm; R = B, or 2B with the null-class half) -> codes
    [B, m]. Factor by factor, least significant first: guidance, filters and sampling apply per factor, and with
    next-sub-token prediction each factor is scored given the factors already sampled (the same values for the
    conditional and the null-class rows, as the official sampler does)."""
    code, offset, prefix = 0, 0, []
    for bits in model.factor_bits:
        logit = _guided(model.sub_token_logits(hidden, tuple(prefix)), guidance_scale, batch).float()
        m, vocab = logit.shape[1], logit.shape[2]
        if temperature == 0:
            part = logit.argmax(-1)
        else:
            if not isinstance(noise, SampleNoise):
                noise = SampleNoise(noise, batch, logit.device)
            filtered = filter_logits(logit / temperature, top_k, top_p)
            part = (filtered + noise.gumbel(m * vocab).view(batch, m, vocab)).argmax(-1)
        prefix.append(part.repeat(hidden.shape[0] // batch, 1))
        code = code + (part << offset)
        offset += bits
    return code


def prefill(model, prompt_ids: torch.Tensor, cache: MergePruningCache) -> torch.Tensor:
    return model(input_ids=prompt_ids, cache=cache, logits_to_keep=1, output_factor_logits=False).last_hidden_state


def decode_one_token(model, codes: torch.Tensor, cache: MergePruningCache) -> torch.Tensor:
    out = model(input_ids=codes[:, None], cache=cache, logits_to_keep=1, output_factor_logits=False)
    return out.last_hidden_state


@torch.no_grad()
def generate_codes(
    model,
    class_labels,
    num_tokens,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generators: Sequence[torch.Generator] | torch.Generator | None = None,
    cache: MergePruningCache | None = None,
    progress=None,
    static: bool = False,
    compile_options: dict | None = None,
) -> torch.LongTensor:
    """Generate code maps ``codes_L`` [B, L] in raster order.

    class_labels: ints [B]; num_tokens: K (int or [B]) given to the merge-instruction token;
    guidance_scale != 1 runs the null class alongside (batch doubled in the same cache);
    progress: optional callable wrapping the step iterator (e.g. a tqdm factory).
    static: decode with :meth:`MergeARForCausalLM.static_decode_step` on a ``new_cache(static=True)`` (fixed shapes,
    no host reads; same codes as the default path); ``compile_options`` (implies ``static``): that step through
    ``torch.compile(step, fullgraph=True, **compile_options)``, e.g. ``{"mode": "reduce-overhead"}`` (CUDA graphs).
    """
    labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
    batch = labels.shape[0]
    if batch == 0:
        raise ValueError("class_labels is empty; give at least one label")
    prompt = model.prompt_ids(labels, num_tokens)
    noise = SampleNoise(generators, batch, prompt.device)
    if guidance_scale != 1.0:
        null = torch.full_like(labels, model.config.num_classes)
        prompt = torch.cat([prompt, model.prompt_ids(null, num_tokens)])
    static = static or compile_options is not None
    num_positions, start = model.config.num_positions, model.config.num_start_tokens
    if cache is None and static:
        cache = model.new_cache(static=True)
    elif cache is None:  # buffers sized from K: one K per row (the null-class rows repeat the conditional ones)
        row_tokens = torch.as_tensor(num_tokens).reshape(-1).expand(batch)
        cache = model.new_cache(num_tokens=row_tokens.repeat(prompt.shape[0] // batch))
    if static and cache.capacity < start + num_positions:
        raise ValueError(f"a static decode needs a cache of {start + num_positions} slots; use new_cache(static=True)")
    step = None
    if static:
        step = model.static_decode_step
        if compile_options is not None:
            step = torch.compile(step, fullgraph=True, **compile_options)
        positions = torch.arange(start, start + num_positions, device=prompt.device)
    codes = torch.empty(batch, num_positions, dtype=torch.long, device=prompt.device)
    hidden = prefill(model, prompt, cache)
    steps = range(num_positions)
    for j in progress(steps) if progress is not None else steps:
        codes[:, j] = sample_code(model, hidden, guidance_scale, batch, temperature, top_k, top_p, noise)[:, -1]
        if j + 1 < num_positions:
            fed = codes[:, j] if guidance_scale == 1.0 else codes[:, j].repeat(2)
            if step is None:
                hidden = decode_one_token(model, fed, cache)
            else:
                hidden = step(fed[:, None], positions[j : j + 1], cache)
    return codes
