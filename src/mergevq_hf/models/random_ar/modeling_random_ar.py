"""Random-order generator over MergeVQ's K merged tokens (paper Sec. 4.2; RandAR-style position instructions).

Sequence ``[class, merge instruction K, P_1, x_1, ..., P_K, x_K]`` with the K tokens of an image in a random
order. ``x_i`` is a code, ``P_i`` the position instruction of its place: one shared learned vector, split per head
and rotated by the 2D RoPE of ``x_i``'s raster position (the first position of its merge group); ``x_i`` gets the
same rotation, start tokens none. The output at ``P_i`` predicts ``x_i``. The decoder is LLaMA-style (RMSNorm,
SwiGLU) with plain causal attention and transformers' ``DynamicCache`` for incremental decoding; parallel
decoding, CFG and the sampling loop are in ``generation.py`` (``generate_random_order``).

This folder loads as Hub remote code, so the building blocks shared with MergeAR are copies (marked
``Copied from``; ``tests/test_random_ar.py`` checks they stay identical). Shapes: B batch, T tokens, C hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_random_ar import RandomARConfig


@dataclass
class RandomARCausalLMOutput(ModelOutput):
    """loss: summed cross-entropy of the factors over the code targets.
    factor_logits: one [B, T', 2**bits] tensor per factor (only the last ``logits_to_keep`` positions when set;
    None when ``labels`` are given without ``logits_to_keep``: training needs the loss only). With next-sub-token
    prediction (``factorized_num_layers > 0``) factor 1 at a position instruction is conditioned on factor 0 of
    the code that follows it in ``input_ids`` (teacher forcing), and on factor 0's argmax where no code follows.
    last_hidden_state [B, T', C]: the decoder output before the final norm at the kept positions, what
    ``sub_token_logits`` reads (the sampler draws factor by factor from it).
    cache: the ``DynamicCache`` holding this sequence's keys/values (when decoding incrementally)."""

    loss: torch.FloatTensor | None = None
    factor_logits: tuple[torch.FloatTensor, ...] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    cache: DynamicCache | None = None


# Copied from mergevq_hf.models.mergear.modeling_mergear.RMSNorm
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_fp32 = x.float()
        return (x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


# Copied from mergevq_hf.models.mergear.modeling_mergear.apply_rotary
def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, D] with (even, odd) channel pairs rotated by the angles of cos/sin [T, D/2]."""
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
    out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.flatten(-2).type_as(x)


# Copied from mergevq_hf.models.mergear.modeling_mergear.SwiGLU with MergeAR->RandomAR
class SwiGLU(nn.Module):
    def __init__(self, config: RandomARConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.dropout = nn.Dropout(config.ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class GridRotary(nn.Module):
    """2D rotary angles of the grid positions: half of each head's pairs rotate with the row, half with the
    column (MergeAR's table). Index 0 is the no-rotation row used by start tokens (position -1)."""

    def __init__(self, config: RandomARConfig):
        super().__init__()
        self.config = config
        cos, sin = self.tables()
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        quarter = config.hidden_size // config.num_attention_heads // 4
        freqs = 1.0 / (config.rope_theta ** (torch.arange(quarter, dtype=torch.float64) / quarter))
        grid = torch.arange(config.num_positions)
        rows, cols = grid // config.grid_size, grid % config.grid_size
        angles = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=-1)  # [L, head_dim/2]
        angles = torch.cat([torch.zeros(1, 2 * quarter, dtype=torch.float64), angles])
        return angles.cos().float(), angles.sin().float()

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] in -1..L-1 (-1 = not rotated) -> cos, sin [B, 1, T, head_dim/2]."""
        return self.cos[positions + 1][:, None], self.sin[positions + 1][:, None]


class RandomARAttention(nn.Module):
    def __init__(self, config: RandomARConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.attention_dropout = config.attention_dropout
        self.resid_dropout = nn.Dropout(config.resid_dropout)

    def forward(self, x, rotary, mask, cache=None):
        batch, tokens, _ = x.shape
        shape = (batch, tokens, self.num_heads, self.head_dim)
        q = apply_rotary(self.q_proj(x).view(shape).transpose(1, 2), *rotary)
        k = apply_rotary(self.k_proj(x).view(shape).transpose(1, 2), *rotary)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        dropout = self.attention_dropout if self.training else 0.0
        # mask None: causal over the whole sequence (no cache) or a single query (sees everything cached)
        causal = mask is None and cache is None and tokens > 1
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        return self.resid_dropout(self.o_proj(out.transpose(1, 2).reshape(batch, tokens, -1)))


class RandomARDecoderLayer(nn.Module):
    def __init__(self, config: RandomARConfig, layer_idx: int):
        super().__init__()
        self.attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = RandomARAttention(config, layer_idx)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.feed_forward = SwiGLU(config)

    def forward(self, x, rotary, mask, cache=None):
        x = x + self.attention(self.attention_norm(x), rotary, mask, cache)
        return x + self.feed_forward(self.ffn_norm(x))


# Copied from mergevq_hf.models.mergear.modeling_mergear.sub_token_pass
def sub_token_pass(layers, rotary, hidden: torch.Tensor, prefix_embeds: torch.Tensor) -> torch.Tensor:
    """The intra-token (next-sub-token) pass of the official stage 2: per position, the short causal sequence
    ``[h, e_0, ..., e_{P-1}]`` through ``layers``. hidden [..., C]; prefix_embeds [..., P, C] (embeddings of the
    factors already chosen); rotary: (cos, sin) [>= 1 + P, D/2] rows of the slots -> [..., 1 + P, C]."""
    x = torch.cat([hidden.unsqueeze(-2), prefix_embeds.to(hidden.dtype)], dim=-2)
    lead, slots = x.shape[:-2], x.shape[-2]
    x = x.reshape(-1, slots, x.shape[-1])
    cos, sin = rotary
    mask = torch.ones(slots, slots, dtype=torch.bool, device=x.device).tril()
    for layer in layers:
        x = layer(x, (cos[:slots], sin[:slots]), mask)
    return x.reshape(*lead, slots, x.shape[-1])


# Copied from mergevq_hf.models.mergear.modeling_mergear.FactorizedHeadsMixin
class FactorizedHeadsMixin:
    """Output heads over codes split into factors (``factor_bits``, least significant first): independent heads,
    or next-sub-token prediction when ``sub_token_layers`` is not empty (the official stage 2: factor 1 is scored
    given factor 0 by an intra-token pass). The model provides ``factor_bits``, ``tok_embeddings``,
    ``sub_token_layers``, ``norm``, ``heads`` and ``_sub_token_rotary()``; hidden states are the decoder output
    before the final norm."""

    def sub_token_logits(self, hidden: torch.Tensor, prefix: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """Logits [..., 2**bits_i] of factor i = ``len(prefix)`` of the code each position predicts.

        hidden [..., C]: decoder output before the final norm (the output's ``last_hidden_state``); prefix: the
        values [...] of the factors before i. Independent heads ignore ``prefix``."""
        index = len(prefix)
        if not self.sub_token_layers:
            return self.heads[index](self.norm(hidden))
        embeds = [self.tok_embeddings[j](prefix[j]) for j in range(index)]
        prefix_embeds = torch.stack(embeds, dim=-2) if embeds else hidden.unsqueeze(-2)[..., :0, :]
        out = sub_token_pass(self.sub_token_layers, self._sub_token_rotary(), hidden, prefix_embeds)
        return self.heads[index](self.norm(out[..., index, :]))

    def factor_logits_of(self, hidden: torch.Tensor, next_codes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All factor logits at once. next_codes [...]: the code each position predicts (teacher forcing for
        factor 1), negative where unknown (factor 0's argmax is used there)."""
        if not self.sub_token_layers:
            normed = self.norm(hidden)
            return tuple(head(normed) for head in self.heads)
        known = next_codes >= 0
        first = self._split_codes(next_codes.clamp_min(0))[0]
        if not bool(known.all()):
            first = torch.where(known, first, self.sub_token_logits(hidden).argmax(-1))
        out = sub_token_pass(
            self.sub_token_layers, self._sub_token_rotary(), hidden, self.tok_embeddings[0](first).unsqueeze(-2)
        )
        normed = self.norm(out)
        return tuple(head(normed[..., i, :]) for i, head in enumerate(self.heads))

    def joint_log_probs_of(self, hidden: torch.Tensor) -> torch.Tensor:
        """log p(code) [..., 2**code_dim] of the code each position predicts (code = f0 + f1 << bits_0). With
        next-sub-token prediction factor 1 is scored once for every value of factor 0."""
        if not self.sub_token_layers:
            return self.joint_log_probs(self.factor_logits_of(hidden, hidden.new_zeros(hidden.shape[:-1]).long()))
        first_values = 2 ** self.factor_bits[0]
        log_first = torch.log_softmax(self.sub_token_logits(hidden).float(), dim=-1)  # [..., n0]
        expanded = hidden.unsqueeze(-2).expand(*hidden.shape[:-1], first_values, hidden.shape[-1])
        values = torch.arange(first_values, device=hidden.device).expand(expanded.shape[:-1])
        log_second = torch.log_softmax(self.sub_token_logits(expanded, (values,)).float(), dim=-1)  # [..., n0, n1]
        return (log_second + log_first[..., None]).transpose(-1, -2).flatten(-2)

    def _split_codes(self, codes: torch.Tensor) -> list[torch.Tensor]:
        parts, offset = [], 0
        for bits in self.factor_bits:
            parts.append((codes >> offset) & (2**bits - 1))
            offset += bits
        return parts

    @staticmethod
    def joint_log_probs(factor_logits) -> torch.Tensor:
        """Independent factors -> log p(code) [..., V] with code = sum_i factor_i << offset_i."""
        joint = None
        for logit in factor_logits:  # least significant factor first
            logp = torch.log_softmax(logit.float(), dim=-1)
            joint = logp if joint is None else (logp[..., :, None] + joint[..., None, :]).flatten(-2)
        return joint


class RandomARPreTrainedModel(PreTrainedModel):
    config_class = RandomARConfig
    config: RandomARConfig
    base_model_prefix = "random_ar"
    _no_split_modules = ["RandomARDecoderLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, GridRotary):  # non-persistent buffers: rebuilt after loading on the meta device
            cos, sin = module.tables()
            module.cos.copy_(cos)
            module.sin.copy_(sin)
        elif isinstance(module, RandomARForCausalLM):
            nn.init.normal_(module.position_instruction, std=std)
            module.position_counts.zero_()


class RandomARForCausalLM(FactorizedHeadsMixin, RandomARPreTrainedModel):
    """Class-conditional random-order generator of the K merged tokens and their positions.

    Training: ``loss = model(**model.training_inputs(tokens, positions, labels, num_tokens)).loss`` (through
    the DDP wrapper when distributed; a new random order per sample each call).
    Generation: ``mergevq_hf.models.random_ar.generate_random_order`` (KV cache, parallel decoding, CFG);
    the positions to fill are drawn from ``position_counts``, the prior of first-of-group positions counted on
    the training data (:meth:`set_position_prior`).
    """

    def __init__(self, config: RandomARConfig):
        super().__init__(config)
        self.factor_bits = config.factors
        self.tok_embeddings = nn.ModuleList(nn.Embedding(2**bits, config.hidden_size) for bits in self.factor_bits)
        self.class_embedding = nn.Embedding(config.num_classes + 1, config.hidden_size)  # last = null class
        self.merge_embedding = nn.Embedding(config.num_positions + 1, config.hidden_size)  # index = kept count K
        self.position_instruction = nn.Parameter(torch.zeros(config.hidden_size))
        self.token_dropout = nn.Dropout(config.token_dropout)
        self.rotary = GridRotary(config)
        self.layers = nn.ModuleList(RandomARDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        # next-sub-token prediction (official stage 2): blocks over [h, embedding_0(f0)]; empty = independent heads
        self.sub_token_layers = nn.ModuleList(
            RandomARDecoderLayer(config, i) for i in range(config.factorized_num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.heads = nn.ModuleList(nn.Linear(config.hidden_size, 2**bits, bias=False) for bits in self.factor_bits)
        # position_counts[K, p]: how often position p was a token position among training images with K tokens
        self.register_buffer("position_counts", torch.zeros(config.num_positions + 1, config.num_positions))
        self.post_init()
        self.generation_config = self.default_generation_config()

    # ------------------------------------------------------------------ sampling defaults (generation_config.json)
    @classmethod
    def can_generate(cls) -> bool:
        """True, so that transformers keeps a ``generation_config`` with the weights (``save_pretrained`` writes
        ``generation_config.json``, ``from_pretrained`` reads it through :meth:`adjust_generation_fn`): the sampling
        defaults the checkpoint was measured at (``guidance_scale``, ``temperature``, ``top_k``, ``top_p``), which
        ``MergeVQPipeline`` uses when a call gives none. Sampling itself is ``generate_random_order`` (class labels
        and K in, codes and positions out), not ``GenerationMixin.generate``."""
        return True

    @staticmethod
    def default_generation_config() -> GenerationConfig:
        """Ancestral sampling with no filtering; no guidance scale (the pipeline's default applies)."""
        return GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)

    def adjust_generation_fn(
        self, generation_config, from_auto_class, from_pipeline, pretrained_model_name_or_path, **kwargs
    ) -> None:
        """Called by ``from_pretrained``: ``generation_config`` when given, else the folder's
        ``generation_config.json``; a folder without one keeps :meth:`default_generation_config`."""
        if generation_config is not None:
            self.generation_config = GenerationConfig.from_dict(generation_config.to_dict())
            return
        if pretrained_model_name_or_path is None:
            return
        download = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
        try:
            self.generation_config = GenerationConfig.from_pretrained(
                pretrained_model_name_or_path, **{k: kwargs[k] for k in download if kwargs.get(k) is not None}
            )
        except OSError:  # no generation_config.json in the folder / repository
            pass

    # ------------------------------------------------------------------ ids, inputs
    def prompt_ids(self, class_labels, num_tokens) -> torch.LongTensor:
        """[B, 2] start tokens: class (``num_classes`` = null class) and merge instruction K."""
        cfg = self.config
        device = self.class_embedding.weight.device
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
        counts = torch.as_tensor(num_tokens, dtype=torch.long, device=device).reshape(-1).expand(labels.shape[0])
        if labels.numel() and (labels.min() < 0 or labels.max() > cfg.num_classes):
            raise ValueError(f"class labels must be in 0..{cfg.num_classes} ({cfg.num_classes} = null class)")
        if counts.numel() and (counts.min() < 1 or counts.max() > cfg.num_positions):
            raise ValueError(f"num_tokens must be in 1..{cfg.num_positions}, got {counts.tolist()}")
        base = cfg.vocab_size_codes
        return torch.stack([base + labels, base + cfg.num_classes + 1 + counts], dim=1)

    def set_position_prior(self, counts: torch.Tensor) -> None:
        """counts [L + 1, L]: occurrences of each token position per K (see ``training.codes.position_counts``)."""
        expected = tuple(self.position_counts.shape)
        if tuple(counts.shape) != expected:
            raise ValueError(f"position counts have shape {tuple(counts.shape)}; expected {list(expected)} (L+1, L)")
        self.position_counts.copy_(counts.to(self.position_counts))

    def training_inputs(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        class_labels,
        num_tokens,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``forward`` for the training loss, in a new random order per sample.

        tokens, positions [B, Kmax]: the K codes of every image and their positions (first position of the merge
        group), padded past ``num_tokens[b]`` (any values). Returns ``input_ids`` / ``positions`` [B, 2 + 2 Kmax]
        and ``labels`` (the codes at their own places, -100 elsewhere; padded tails are ignored)."""
        cfg = self.config
        batch, width = tokens.shape
        device = tokens.device
        counts = torch.as_tensor(num_tokens, dtype=torch.long, device=device).reshape(-1).expand(batch)
        valid = torch.arange(width, device=device)[None, :] < counts[:, None]
        # random order of the valid tokens, padding last
        keys = torch.rand(batch, width, generator=generator, device=generator.device if generator else device)
        order = (keys.to(device) + (~valid).float() * 2).argsort(dim=1)
        tokens, positions = tokens.long().gather(1, order), positions.long().gather(1, order)
        tokens = torch.where(valid, tokens, torch.zeros_like(tokens))
        positions = torch.where(valid, positions, torch.zeros_like(positions))
        pid = torch.full_like(tokens, cfg.position_instruction_id)
        body_ids = torch.stack([pid, tokens], dim=2).flatten(1)  # P_1, x_1, P_2, x_2, ...
        body_pos = torch.stack([positions, positions], dim=2).flatten(1)
        input_ids = torch.cat([self.prompt_ids(class_labels, counts), body_ids], dim=1)
        start_pos = torch.full((batch, cfg.num_start_tokens), -1, dtype=torch.long, device=device)
        labels = torch.full_like(input_ids, -100)
        labels[:, cfg.num_start_tokens + 1 :: 2] = torch.where(valid, tokens, torch.full_like(tokens, -100))
        return {"input_ids": input_ids, "positions": torch.cat([start_pos, body_pos], dim=1), "labels": labels}

    # ------------------------------------------------------------------ pieces
    def _sub_token_rotary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary rows of the intra-token slots: the start tokens' (not rotated), then grid position 0's (the
        official ``freqs_cis[:2]`` up to its zeroed class row)."""
        return self.rotary.cos[:2], self.rotary.sin[:2]

    def embed(self, input_ids: torch.Tensor, rotary) -> torch.Tensor:
        cfg = self.config
        base = cfg.vocab_size_codes
        is_code = input_ids < base
        codes = torch.where(is_code, input_ids, torch.zeros_like(input_ids))
        code_emb = sum(emb(part) for emb, part in zip(self.tok_embeddings, self._split_codes(codes)))
        is_class = (input_ids >= base) & (input_ids <= base + cfg.num_classes)
        class_ids = (input_ids - base).clamp(0, cfg.num_classes)
        if self.training and cfg.class_dropout_prob > 0:
            drop = torch.rand(class_ids.shape, device=class_ids.device) < cfg.class_dropout_prob
            class_ids = torch.where(drop & is_class, torch.full_like(class_ids, cfg.num_classes), class_ids)
        merge_ids = (input_ids - base - cfg.num_classes - 1).clamp(0, cfg.num_positions)
        start = torch.where(is_class[..., None], self.class_embedding(class_ids), self.merge_embedding(merge_ids))
        # position instruction: the shared vector split per head and rotated to its target position
        heads = cfg.num_attention_heads
        shared = self.position_instruction.view(1, heads, 1, -1).expand(input_ids.shape[0], -1, input_ids.shape[1], -1)
        instruction = apply_rotary(shared, *rotary).transpose(1, 2).flatten(2)
        is_instruction = input_ids == cfg.position_instruction_id
        hidden = torch.where(is_code[..., None], code_emb, start)
        return self.token_dropout(torch.where(is_instruction[..., None], instruction, hidden))

    def _check_inputs(self, input_ids: torch.Tensor, positions: torch.Tensor, start: int) -> None:
        cfg = self.config
        if input_ids.dim() != 2 or positions.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and positions must both be [B, T], "
                f"got {tuple(input_ids.shape)} and {tuple(positions.shape)}"
            )
        longest = cfg.num_start_tokens + 2 * cfg.num_positions
        if start + input_ids.shape[1] > longest:
            raise ValueError(f"sequence of {start + input_ids.shape[1]} tokens exceeds 2 + 2L = {longest}")

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        positions: torch.LongTensor,
        cache: DynamicCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        output_factor_logits: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RandomARCausalLMOutput:
        """input_ids [B, T] (start tokens, position instructions, codes) with their ``positions`` [B, T]
        (-1 for start tokens; a position instruction and its code share the code's raster position).

        cache: a ``DynamicCache``; the T tokens continue the cached sequence. use_cache: with no cache given,
        ``True`` starts one (returned in ``output.cache``). attention_mask: a boolean [B, 1, T, S] mask (True =
        may attend) over the S = cached + T keys, for parallel decoding steps; default causal.
        labels [B, T] (-100 = ignore) are shifted inside (the output at ``P_i`` predicts the label at ``x_i``).
        output_factor_logits: False skips the heads (``last_hidden_state`` only; the sampler's path).
        """
        if cache is None and use_cache:
            cache = DynamicCache()
        start = cache.get_seq_length() if cache is not None else 0
        self._check_inputs(input_ids, positions, start)
        rotary = self.rotary(positions.long())
        mask = attention_mask
        if mask is None and cache is not None and input_ids.shape[1] > 1:
            mask = causal_mask(input_ids.shape[1], start, input_ids.device)
        hidden = self.embed(input_ids, rotary)
        for layer in self.layers:
            hidden = layer(hidden, rotary, mask, cache)
        keep = hidden[:, -logits_to_keep:] if logits_to_keep else hidden

        loss = None
        if labels is not None:
            targets = labels[:, 1:]
            valid = targets != -100
            rows, codes = hidden[:, :-1][valid], targets[valid]  # only the position instructions feed the heads
            smoothing = self.config.label_smoothing if self.training else 0.0
            loss = sum(  # next-sub-token prediction: factor 1 teacher-forced on the target's factor 0
                F.cross_entropy(logit, part, label_smoothing=smoothing)
                for logit, part in zip(self.factor_logits_of(rows, codes), self._split_codes(codes))
            )
        factor_logits = None
        # training reads the loss only: no logits over every token; the sampler reads last_hidden_state
        if output_factor_logits and (labels is None or logits_to_keep):
            base = self.config.vocab_size_codes
            next_ids = input_ids[:, 1:]
            next_codes = torch.full_like(input_ids, -1)  # the code each output predicts, where the input gives it
            next_codes[:, :-1] = torch.where(next_ids < base, next_ids, torch.full_like(next_ids, -1))
            next_codes = next_codes[:, -logits_to_keep:] if logits_to_keep else next_codes
            factor_logits = self.factor_logits_of(keep, next_codes)
        return RandomARCausalLMOutput(loss=loss, factor_logits=factor_logits, last_hidden_state=keep, cache=cache)

    def training_loss(self, tokens, positions, class_labels, num_tokens, generator=None) -> torch.Tensor:
        """Single-process convenience; distributed training calls the wrapped model with :meth:`training_inputs`."""
        return self(**self.training_inputs(tokens, positions, class_labels, num_tokens, generator)).loss


def causal_mask(queries: int, past: int, device) -> torch.Tensor:
    """[1, 1, q, past + q] bool: query i (absolute index past + i) sees every key up to itself."""
    keys = torch.arange(past + queries, device=device)
    return (keys[None, :] <= past + torch.arange(queries, device=device)[:, None])[None, None]


__all__ = ["RandomARForCausalLM", "RandomARPreTrainedModel", "RandomARCausalLMOutput", "causal_mask"]
