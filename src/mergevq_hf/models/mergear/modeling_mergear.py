"""MergeAR: LLaMA-style causal LM over MergeVQ code maps with duplicate-pruned attention.

Sequence: ``[class, merge instruction K, c_0, ..., c_{L-1}]`` (ids >= 2**code_dim are start tokens).
A code equal to an earlier code of the same sequence is a duplicate: later queries never attend to it
(training mask) and its key/value is never cached (``MergePruningCache``); it still attends to itself.
Both paths use :func:`duplicate_mask`, so the masked training forward and cached decoding give the same
logits. Shapes: B batch, T tokens, C hidden, V = 2**code_dim codes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .cache import MergePruningCache, duplicate_mask
from .configuration_mergear import MergeARConfig

try:  # the name of the cache in outputs and generate(): "cache" from transformers 5.24, "past_key_values" before
    from transformers.generation.utils import ALL_CACHE_NAMES

    CACHE_NAME = ALL_CACHE_NAMES[0]
except ImportError:  # pragma: no cover
    CACHE_NAME = "cache"


def _cache_argument(cache, past_key_values, where: str):
    """``cache`` is the name transformers uses since 5.24; ``past_key_values`` stays a deprecated alias."""
    if past_key_values is not None:
        if cache is not None and cache is not past_key_values:
            raise ValueError(f"{where}: pass the cache once, as `cache` (`past_key_values` is its deprecated alias)")
        if CACHE_NAME == "past_key_values":  # the current name on transformers < 5.24
            return past_key_values
        warnings.warn(
            f"{where}: `past_key_values` is deprecated, pass `cache=` (transformers >= 5.24 naming)",
            FutureWarning,
            stacklevel=3,
        )
        return past_key_values
    return cache


@dataclass
class MergeARCausalLMOutput(ModelOutput):
    """loss: summed cross-entropy of the factors.
    logits [B, T', V]: raw logits of a plain head; for factorised heads the log-probabilities of the joint code
    distribution (V = 2**code_dim), computed only when asked (``output_joint_logits=True``, as ``generate()``
    does), never in training; only the last ``logits_to_keep`` positions when set.
    factor_logits: one [B, T', 2**bits] tensor per factor. With next-sub-token prediction
    (``factorized_num_layers > 0``) factor 1 at position t is conditioned on factor 0 of the code at t + 1 (teacher
    forcing on ``input_ids``), and on the argmax of factor 0 where no code follows (the last position); None with
    ``labels`` (training reads the loss) or ``output_factor_logits=False``.
    last_hidden_state [B, T', C]: the decoder output before the final norm at the kept positions, what
    :meth:`MergeARForCausalLM.sub_token_logits` reads (``generate_codes`` samples factor by factor from it).
    cache: the ``MergePruningCache`` holding this sequence's keys/values (the field is ``past_key_values`` on
    transformers < 5.24, where ``.cache`` reads it)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    factor_logits: tuple[torch.FloatTensor, ...] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    if CACHE_NAME == "cache":
        cache: MergePruningCache | None = None
    else:  # pragma: no cover (exercised in the minimum-versions environment)
        past_key_values: MergePruningCache | None = None

        @property
        def cache(self) -> MergePruningCache | None:
            return self.past_key_values


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_fp32 = x.float()
        return (x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Rotary2D(nn.Module):
    """2D rotary embedding over the token grid: half of each head's pairs rotate with the row, half with
    the column. Start tokens (the logical positions before the codes) are not rotated, or zeroed
    (``config.zero_start_rotary``: cos = sin = 0, the official stage 2 / LlamaGen table)."""

    def __init__(self, config: MergeARConfig):
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
        start = torch.zeros(config.num_start_tokens, 2 * quarter, dtype=torch.float64)
        cos, sin = torch.cat([start.cos(), angles.cos()]), torch.cat([start.sin(), angles.sin()])
        if config.zero_start_rotary:
            cos[: config.num_start_tokens] = 0.0
        return cos.float(), sin.float()

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T] logical -> cos, sin [T, head_dim/2]."""
        return self.cos[positions], self.sin[positions]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, D] with (even, odd) channel pairs rotated by the angles of cos/sin [T, D/2]."""
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
    out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.flatten(-2).type_as(x)


class MergeARAttention(nn.Module):
    def __init__(self, config: MergeARConfig, layer_idx: int):
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
        if cache is not None:  # stores k/v (duplicates pruned) and attends with the mask its plan_step made
            out = cache.attend(q, k, v, self.layer_idx)
        else:
            dropout = self.attention_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.resid_dropout(self.o_proj(out.transpose(1, 2).reshape(batch, tokens, -1)))


class SwiGLU(nn.Module):
    def __init__(self, config: MergeARConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.dropout = nn.Dropout(config.ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class MergeARDecoderLayer(nn.Module):
    def __init__(self, config: MergeARConfig, layer_idx: int):
        super().__init__()
        self.attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = MergeARAttention(config, layer_idx)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.feed_forward = SwiGLU(config)

    def forward(self, x, rotary, mask, cache=None):
        x = x + self.attention(self.attention_norm(x), rotary, mask, cache)
        return x + self.feed_forward(self.ffn_norm(x))


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


class MergeARPreTrainedModel(PreTrainedModel):
    config_class = MergeARConfig
    config: MergeARConfig
    base_model_prefix = "mergear"
    _no_split_modules = ["MergeARDecoderLayer"]
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
        elif isinstance(module, Rotary2D):  # non-persistent buffers: rebuilt after loading on the meta device
            cos, sin = module.tables()
            module.cos.copy_(cos)
            module.sin.copy_(sin)


class MergeARForCausalLM(FactorizedHeadsMixin, MergeARPreTrainedModel, GenerationMixin):
    """Class-conditional raster-order generator over MergeVQ code maps ``codes_L`` [B, L].

    Training: ``loss = model(**model.training_inputs(codes_L, class_labels, num_tokens)).loss`` (through the
    DDP wrapper when distributed), or ``model.training_loss(codes_L, class_labels, num_tokens)`` on one process.
    Generation: ``model.generate(input_ids=model.prompt_ids(class_labels, num_tokens))`` builds its own
    ``MergePruningCache`` and produces exactly L codes (``generation_config.json``); ``guidance_scale=s`` runs
    the null class beside it. ``mergevq_hf.models.mergear.generate_codes`` is the package's own loop
    (per-sample seeds, factor-wise sampling, CFG in one batch).
    """

    def __init__(self, config: MergeARConfig):
        super().__init__(config)
        self.factor_bits = config.factors
        self.tok_embeddings = nn.ModuleList(nn.Embedding(2**bits, config.hidden_size) for bits in self.factor_bits)
        self.class_embedding = nn.Embedding(config.num_classes + 1, config.hidden_size)  # last = null class
        self.merge_embedding = nn.Embedding(config.num_positions + 1, config.hidden_size)  # index = kept count K
        self.token_dropout = nn.Dropout(config.token_dropout)
        self.rotary = Rotary2D(config)
        self.layers = nn.ModuleList(MergeARDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        # next-sub-token prediction (official stage 2): blocks over [h_t, embedding_0(f0)]; empty = independent heads
        self.sub_token_layers = nn.ModuleList(
            MergeARDecoderLayer(config, i) for i in range(config.factorized_num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.heads = nn.ModuleList(nn.Linear(config.hidden_size, 2**bits, bias=False) for bits in self.factor_bits)
        self.post_init()
        self.generation_config = self.default_generation_config(config)

    @staticmethod
    def default_generation_config(config: MergeARConfig) -> GenerationConfig:
        """Exactly L new codes after the 2 start tokens, ancestral sampling with no filtering (the paper's
        setting); no end-of-sequence token exists."""
        return GenerationConfig(
            max_new_tokens=config.num_positions,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            use_cache=True,
        )

    # ------------------------------------------------------------------ ids of the start tokens
    def prompt_ids(self, class_labels, num_tokens) -> torch.LongTensor:
        """[B, 2] start tokens: class (``num_classes`` = null class) and merge instruction K; [B, 1] (the class)
        without merge instructions (``config.merge_instruction=False``, where K only sizes caches)."""
        cfg = self.config
        device = self.class_embedding.weight.device
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
        counts = torch.as_tensor(num_tokens, dtype=torch.long, device=device).reshape(-1).expand(labels.shape[0])
        if labels.numel() and (labels.min() < 0 or labels.max() > cfg.num_classes):
            raise ValueError(f"class labels must be in 0..{cfg.num_classes} ({cfg.num_classes} = null class)")
        if counts.numel() and (counts.min() < 1 or counts.max() > cfg.num_positions):
            raise ValueError(f"num_tokens must be in 1..{cfg.num_positions}, got {counts.tolist()}")
        base = cfg.vocab_size_codes
        if not cfg.merge_instruction:
            return (base + labels)[:, None]
        return torch.stack([base + labels, base + cfg.num_classes + 1 + counts], dim=1)

    def build_inputs(self, codes_L: torch.Tensor, class_labels, num_tokens) -> torch.LongTensor:
        """[B, 2 + L] full training sequence (prompt + codes)."""
        if codes_L.shape[1] != self.config.num_positions:
            raise ValueError(f"codes_L has {codes_L.shape[1]} positions; expected L={self.config.num_positions}")
        return torch.cat([self.prompt_ids(class_labels, num_tokens), codes_L.long()], dim=1)

    def new_cache(
        self, prune: bool | None = None, initial_capacity: int | None = None, num_tokens=None, static: bool = False
    ) -> MergePruningCache:
        """A cache for generation; ``prune`` defaults to ``config.prune_duplicates`` (False: a dense cache).

        Capacity (slots per row, grown in blocks of 64 past it): ``initial_capacity`` when given, else the start
        tokens plus L for a dense cache, or plus K + 1 for a pruned one (the code map of K merged tokens has at most
        K distinct codes, + the slot a duplicate query writes before it is dropped; 64 when K is unknown).
        ``num_tokens``: K as an int, or one K per cache row (a [rows] tensor or list; with classifier-free guidance
        the rows are the conditional then the null-class half); rows of different K get buffers of their own size.
        ``static=True``: one buffer of start tokens + L slots for every row, for :meth:`static_decode_step` (fixed
        shapes and no host reads; it reads every slot, so it saves no bytes)."""
        prune = self.config.prune_duplicates if prune is None else prune
        start, num_positions = self.config.num_start_tokens, self.config.num_positions
        row_capacity = None
        if static:
            initial_capacity = start + num_positions
        elif initial_capacity is None:
            if not prune:
                initial_capacity = start + num_positions
            elif num_tokens is None:
                initial_capacity = start + 64
            else:
                ks = torch.as_tensor(num_tokens).reshape(-1).tolist()
                capacities = [start + min(int(k) + 1, num_positions) for k in ks]
                initial_capacity = max(capacities)
                if len(set(capacities)) > 1:
                    row_capacity = capacities
        return MergePruningCache(
            self.config.num_hidden_layers,
            prune=prune,
            initial_capacity=initial_capacity,
            num_codes=self.config.vocab_size_codes,
            row_capacity=row_capacity,
        )

    def _merge_counts(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """K of each row when ``input_ids`` starts with a prompt (class token, merge-instruction token), else None."""
        cfg = self.config
        if not cfg.merge_instruction or input_ids.dim() != 2 or input_ids.shape[1] < 2:
            return None
        counts = input_ids[:, 1] - (cfg.vocab_size_codes + cfg.num_classes + 1)
        valid = bool(((counts >= 1) & (counts <= cfg.num_positions)).all())
        return counts if valid else None

    def static_decode_step(
        self, input_ids: torch.LongTensor, position: torch.LongTensor, cache: MergePruningCache
    ) -> torch.Tensor:
        """One token per row on a cache from ``new_cache(static=True)`` after its prompt step: the decoder output
        [B, 1, C] before the final norm (:meth:`sub_token_logits` turns it into factor logits). Static shapes, no
        host reads, no data-dependent Python branches and no input checks, so
        ``torch.compile(self.static_decode_step, fullgraph=True, mode="reduce-overhead")``
        captures it whole (CUDA graphs on a GPU).
        ``input_ids`` [B, 1]; ``position`` [1]: the token's logical position."""
        cache.plan_static_step(self._codes_of(input_ids))
        rotary = self.rotary(position)
        hidden = self.embed(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, rotary, None, cache)
        cache.finish_static_step()
        return hidden

    # ------------------------------------------------------------------ output heads
    def _sub_token_rotary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary rows of the intra-token slots: the first start token's row, then the first grid position's (the
        official ``freqs_cis[:2]``)."""
        start = self.config.num_start_tokens
        return self.rotary.cos[[0, start]], self.rotary.sin[[0, start]]

    # ------------------------------------------------------------------ pieces
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
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
        return self.token_dropout(torch.where(is_code[..., None], code_emb, start))

    @staticmethod
    def training_mask(codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T] (-1 for start tokens) -> bool mask [B, 1, T, T]: causal, duplicates hidden from
        later queries, every query sees itself."""
        tokens = codes.shape[1]
        causal = torch.ones(tokens, tokens, dtype=torch.bool, device=codes.device).tril()
        visible = ~duplicate_mask(codes)
        eye = torch.eye(tokens, dtype=torch.bool, device=codes.device)
        return (causal & (visible[:, None, :] | eye))[:, None]

    def _codes_of(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.where(input_ids < self.config.vocab_size_codes, input_ids, torch.full_like(input_ids, -1))

    def _check_input_ids(self, input_ids: torch.Tensor, start: int) -> None:
        cfg = self.config
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        if start + input_ids.shape[1] > cfg.num_start_tokens + cfg.num_positions:
            raise ValueError(
                f"sequence of {start + input_ids.shape[1]} tokens exceeds {cfg.num_start_tokens} start tokens + "
                f"L={cfg.num_positions} codes"
            )
        if not bool(((input_ids >= 0) & (input_ids < cfg.total_vocab_size)).all()):  # one host read
            raise ValueError(f"input_ids must be in 0..{cfg.total_vocab_size - 1}")

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        cache: MergePruningCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_joint_logits: bool | None = None,
        output_factor_logits: bool = True,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        past_key_values: MergePruningCache | None = None,
        **kwargs,
    ) -> MergeARCausalLMOutput:
        """input_ids [B, T]: start-token ids and codes.

        cache: a ``MergePruningCache``; the T tokens continue the cached sequence (``past_key_values`` is the
        deprecated alias). use_cache: with no ``cache`` given, ``True`` starts a new one and returns it in
        ``output.cache`` (``generate()`` does this); the default runs the masked full-sequence forward.
        labels [B, T] (-100 = ignore) are shifted inside. output_joint_logits: also return the joint
        log-probabilities over all 2**code_dim codes (factorised heads; [B, T', 2**code_dim] floats); default:
        only when decoding with a cache and no labels (generation, including transformers' CFG branch), never
        in training. output_factor_logits: False skips the heads (``last_hidden_state`` only; the sampler's path).
        attention_mask: only all-ones is accepted (MergeAR sequences have no padding).
        """
        cache = _cache_argument(cache, past_key_values, "MergeARForCausalLM.forward")
        if cache is not None and not isinstance(cache, MergePruningCache):
            raise TypeError(f"MergeAR needs a MergePruningCache, got {type(cache).__name__}")
        if attention_mask is not None and not bool((attention_mask == 1).all()):
            raise ValueError("attention_mask with padding is not supported: MergeAR sequences all have the same length")
        if cache is None and use_cache:  # sized from the K of the merge-instruction tokens when they are here
            cache = self.new_cache(num_tokens=self._merge_counts(input_ids))
        start = cache.get_seq_length() if cache is not None else 0
        self._check_input_ids(input_ids, start)
        codes = self._codes_of(input_ids)
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        rotary = self.rotary(positions)
        mask = None
        if cache is not None:
            cache.plan_step(codes)
        elif self.config.prune_duplicates:
            mask = self.training_mask(codes)
        else:  # the plain raster baseline: ordinary causal attention
            mask = torch.ones(codes.shape[1], codes.shape[1], dtype=torch.bool, device=codes.device).tril()

        hidden = self.embed(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, rotary, mask, cache)
        if cache is not None:
            cache.finish_step()
        keep = hidden[:, -logits_to_keep:] if logits_to_keep else hidden

        loss, factor_logits, logits = None, None, None
        if labels is not None:
            targets = labels[:, 1:]
            valid = targets != -100
            safe = torch.where(valid, targets, torch.zeros_like(targets))
            parts = self._split_codes(safe)
            smoothing = self.config.label_smoothing if self.training else 0.0
            if self.sub_token_layers:  # teacher forcing: factor 1 reads the target's factor 0
                all_logits = self.factor_logits_of(hidden[:, :-1], safe)
            else:  # the heads run once over all positions; the loss reads the shifted slice
                all_logits = self.factor_logits_of(hidden, codes)
                factor_logits = tuple(logit[:, -logits_to_keep:] if logits_to_keep else logit for logit in all_logits)
                all_logits = tuple(logit[:, :-1] for logit in all_logits)
            loss = sum(
                F.cross_entropy(logit[valid], part[valid], label_smoothing=smoothing)
                for logit, part in zip(all_logits, parts)
            )
        elif output_factor_logits:
            next_codes = torch.full_like(codes, -1)
            next_codes[:, :-1] = codes[:, 1:]
            next_codes = next_codes[:, -logits_to_keep:] if logits_to_keep else next_codes
            factor_logits = self.factor_logits_of(keep, next_codes)
        if len(self.factor_bits) == 1:
            logits = factor_logits[0] if factor_logits is not None else self.sub_token_logits(keep)
        else:
            if output_joint_logits is None:
                output_joint_logits = cache is not None and labels is None
            if output_joint_logits:
                logits = self.joint_log_probs_of(keep)
        return MergeARCausalLMOutput(
            loss=loss, logits=logits, factor_logits=factor_logits, last_hidden_state=keep, **{CACHE_NAME: cache}
        )

    def training_inputs(self, codes_L: torch.Tensor, class_labels, num_tokens) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``forward`` for the training loss: ``input_ids`` (prompt + codes) and ``labels``
        (codes only). Call the (possibly DDP-wrapped) model with them, so gradients are synchronised."""
        input_ids = self.build_inputs(codes_L, class_labels, num_tokens)
        labels = input_ids.clone()
        labels[:, : self.config.num_start_tokens] = -100
        return {"input_ids": input_ids, "labels": labels}

    def training_loss(self, codes_L: torch.Tensor, class_labels, num_tokens) -> torch.Tensor:
        """Single-process convenience; distributed training calls the wrapped model with :meth:`training_inputs`."""
        return self(**self.training_inputs(codes_L, class_labels, num_tokens)).loss

    # ------------------------------------------------------------------ generate()
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a DynamicCache: the first forward starts a MergePruningCache (use_cache)
        return False

    def prepare_inputs_for_generation(
        self,
        input_ids,
        cache=None,
        past_key_values=None,
        use_cache=None,
        attention_mask=None,
        **kwargs,
    ):
        cache = cache if cache is not None else past_key_values  # generate() of transformers < 5.24
        if cache is not None and cache.get_seq_length() > 0:
            input_ids = input_ids[:, cache.get_seq_length() :]
        return {
            "input_ids": input_ids,
            "cache": cache,
            "use_cache": self.generation_config.use_cache if use_cache is None else use_cache,
            "attention_mask": attention_mask if cache is None else None,  # checked once (first step), no sync after
            "logits_to_keep": 1,
            "output_joint_logits": True,
            "output_factor_logits": False,
        }

    def null_prompt_like(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """The same sequence with the class token replaced by the null class (the CFG branch)."""
        null = input_ids.clone()
        null[:, 0] = self.config.vocab_size_codes + self.config.num_classes
        return null

    def generate(self, inputs=None, generation_config=None, **kwargs):
        """``GenerationMixin.generate`` with MergeAR's defaults: a ``MergePruningCache`` is built when none is
        given, and ``guidance_scale != 1`` runs the null-class prompt (``null_prompt_like(input_ids)``) as the
        unconditional branch. It samples from the exact joint code distribution (``joint_log_probs_of``); under greedy
        decoding it gives the same codes as ``generate_codes`` for independent heads (with next-sub-token prediction
        greedy here is the joint argmax, ``generate_codes`` takes the argmax factor by factor)."""
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        config = generation_config or self.generation_config
        length_given = "max_new_tokens" in kwargs or "max_length" in kwargs
        if input_ids is not None and config.max_new_tokens is None and not length_given:
            # a folder saved without MergeAR's generation defaults: still complete the L codes
            kwargs["max_new_tokens"] = self.config.num_start_tokens + self.config.num_positions - input_ids.shape[1]
        scale = kwargs.get("guidance_scale", config.guidance_scale)
        if input_ids is not None and scale is not None and scale != 1 and kwargs.get("negative_prompt_ids") is None:
            kwargs["negative_prompt_ids"] = self.null_prompt_like(input_ids)
        return super().generate(inputs, generation_config, **kwargs)


__all__ = ["MergeARForCausalLM", "MergeARPreTrainedModel", "MergeARCausalLMOutput"]
