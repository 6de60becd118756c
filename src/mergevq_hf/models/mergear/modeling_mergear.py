"""MergeAR: LLaMA-style causal LM over MergeVQ code maps with duplicate-pruned attention.

Sequence: ``[class, merge instruction K, c_0, ..., c_{L-1}]`` (ids >= 2**code_dim are start tokens).
A code equal to an earlier code of the same sequence is a duplicate: later queries never attend to it
(training mask) and its key/value is never cached (``MergePruningCache``); it still attends to itself.
Both paths use :func:`duplicate_mask`, so the masked training forward and cached decoding give the same
logits. Shapes: B batch, T tokens, C hidden, V = 2**code_dim codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .cache import MergePruningCache, duplicate_mask
from .configuration_mergear import MergeARConfig


@dataclass
class MergeARCausalLMOutput(ModelOutput):
    """loss: summed cross-entropy of the factors; logits [B, T', V]: log-probabilities of the joint code
    distribution for factorised heads (raw logits for a plain head), only for the last ``logits_to_keep``
    positions when set; factor_logits: one [B, T', 2**bits] tensor per factor."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    factor_logits: tuple[torch.FloatTensor, ...] | None = None
    past_key_values: MergePruningCache | None = None


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
    the column. Start tokens (logical positions < 2) are not rotated."""

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
        angles = torch.cat([torch.zeros(config.num_start_tokens, 2 * quarter, dtype=torch.float64), angles])
        return angles.cos().float(), angles.sin().float()

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

    def forward(self, x, rotary, mask, past_key_values=None):
        batch, tokens, _ = x.shape
        shape = (batch, tokens, self.num_heads, self.head_dim)
        q = apply_rotary(self.q_proj(x).view(shape).transpose(1, 2), *rotary)
        k = apply_rotary(self.k_proj(x).view(shape).transpose(1, 2), *rotary)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
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

    def forward(self, x, rotary, mask, past_key_values=None):
        x = x + self.attention(self.attention_norm(x), rotary, mask, past_key_values)
        return x + self.feed_forward(self.ffn_norm(x))


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


class MergeARForCausalLM(MergeARPreTrainedModel, GenerationMixin):
    """Class-conditional raster-order generator over MergeVQ code maps ``codes_L`` [B, L].

    Training: ``model(input_ids=model.build_inputs(codes_L, class_labels, num_tokens), labels=...)``, or
    simply ``model.training_loss(codes_L, class_labels, num_tokens)``. Generation: ``model.generate(
    input_ids=model.prompt_ids(class_labels, num_tokens), past_key_values=model.new_cache(),
    max_new_tokens=L)`` or ``mergevq_hf.models.mergear.generate_codes`` (CFG, per-sample seeds).
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
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.heads = nn.ModuleList(nn.Linear(config.hidden_size, 2**bits, bias=False) for bits in self.factor_bits)
        self.post_init()

    # ------------------------------------------------------------------ ids of the start tokens
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

    def build_inputs(self, codes_L: torch.Tensor, class_labels, num_tokens) -> torch.LongTensor:
        """[B, 2 + L] full training sequence (prompt + codes)."""
        if codes_L.shape[1] != self.config.num_positions:
            raise ValueError(f"codes_L has {codes_L.shape[1]} positions; expected L={self.config.num_positions}")
        return torch.cat([self.prompt_ids(class_labels, num_tokens), codes_L.long()], dim=1)

    def new_cache(self, prune: bool = True, initial_capacity: int | None = None) -> MergePruningCache:
        capacity = initial_capacity or self.config.num_start_tokens + 64
        return MergePruningCache(self.config.num_hidden_layers, prune=prune, initial_capacity=capacity)

    # ------------------------------------------------------------------ pieces
    def _split_codes(self, codes: torch.Tensor) -> list[torch.Tensor]:
        parts, offset = [], 0
        for bits in self.factor_bits:
            parts.append((codes >> offset) & (2**bits - 1))
            offset += bits
        return parts

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
                f"sequence of {start + input_ids.shape[1]} tokens exceeds 2 start tokens + L={cfg.num_positions} codes"
            )
        if input_ids.min() < 0 or input_ids.max() >= cfg.total_vocab_size:
            raise ValueError(f"input_ids must be in 0..{cfg.total_vocab_size - 1}")

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor,
        past_key_values: MergePruningCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MergeARCausalLMOutput:
        """input_ids [B, T]: start-token ids and codes. With ``past_key_values`` (a ``MergePruningCache``)
        the T tokens continue the cached sequence. ``labels`` [B, T] (-100 = ignore) are shifted inside."""
        if past_key_values is not None and not isinstance(past_key_values, MergePruningCache):
            raise TypeError(f"MergeAR needs a MergePruningCache, got {type(past_key_values).__name__}")
        start = past_key_values.get_seq_length() if past_key_values is not None else 0
        self._check_input_ids(input_ids, start)
        codes = self._codes_of(input_ids)
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        rotary = self.rotary(positions)
        if past_key_values is not None:
            mask = past_key_values.plan_step(codes)
        else:
            mask = self.training_mask(codes)
        hidden = self.embed(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, rotary, mask, past_key_values)
        if past_key_values is not None:
            past_key_values.finish_step()
        hidden = self.norm(hidden)

        loss = None
        if labels is not None:
            factor_logits = [head(hidden[:, :-1]) for head in self.heads]
            targets = labels[:, 1:]
            valid = targets != -100
            parts = self._split_codes(torch.where(valid, targets, torch.zeros_like(targets)))
            loss = sum(
                F.cross_entropy(
                    logit[valid], part[valid], label_smoothing=self.config.label_smoothing if self.training else 0.0
                )
                for logit, part in zip(factor_logits, parts)
            )
        keep = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        factor_logits = tuple(head(keep) for head in self.heads)
        logits = self.joint_log_probs(factor_logits) if len(factor_logits) > 1 else factor_logits[0]
        return MergeARCausalLMOutput(
            loss=loss, logits=logits, factor_logits=factor_logits, past_key_values=past_key_values
        )

    @staticmethod
    def joint_log_probs(factor_logits) -> torch.Tensor:
        """Independent factors -> log p(code) [..., V] with code = sum_i factor_i << offset_i."""
        joint = None
        for logit in factor_logits:  # least significant factor first
            logp = torch.log_softmax(logit.float(), dim=-1)
            joint = logp if joint is None else (logp[..., :, None] + joint[..., None, :]).flatten(-2)
        return joint

    def training_loss(self, codes_L: torch.Tensor, class_labels, num_tokens) -> torch.Tensor:
        input_ids = self.build_inputs(codes_L, class_labels, num_tokens)
        labels = input_ids.clone()
        labels[:, : self.config.num_start_tokens] = -100
        return self(input_ids=input_ids, labels=labels).loss

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, **kwargs):
        if past_key_values is not None and past_key_values.get_seq_length() > 0:
            input_ids = input_ids[:, past_key_values.get_seq_length() :]
        return {"input_ids": input_ids, "past_key_values": past_key_values, "logits_to_keep": 1}


__all__ = ["MergeARForCausalLM", "MergeARPreTrainedModel", "MergeARCausalLMOutput"]
