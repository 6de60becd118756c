"""MergeVQ source recovery: predict the source matrix (which kept token every grid position belongs to).

Paper Sec. 3.2 (Eqs. 9-11), A.1 and Table A2; official ``SourceRecovery`` in ApexGen-X/MergeVQ
(taming/modules/diffusionmodules/model_mergevq.py). Parameter names match the official module, so its
``recovery.*`` weights map 1:1 (drop the ``recovery.`` prefix).

    kv      = norm_in(rec_embed(quantized))                   [B, K, dim]
    q       = rec_tokens (L learnable queries)                [B, L, dim]
    q       = blocks(q, kv)   # num_layers pre-norm cross-attention blocks with LayerScale
    logits  = rec_head(q) @ rec_head(kv)^T                    [B, L, K]

``softmax(logits, -1)`` is S_hat transposed (per position a distribution over the K tokens) and
``argmax`` gives the predicted group id of every position, the format of ``MergeVQModel.encode(...).source``.

Shapes: quantized [B, K, D] (±1 LFQ codes, kept-token order); source [B, L] long in [0, K);
token_mask [B, K] bool (True = real token, False = padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_source_recovery import SourceRecoveryConfig


@dataclass
class SourceRecoveryOutput(ModelOutput):
    """Result of [`SourceRecoveryModel.forward`].

    loss: scalar source loss (config ``source_loss_type``; paper Eq. 11 by default), only when ``source`` is given.
    logits [B, L, K]: per position, unnormalised scores over the K tokens (-inf on masked tokens).
    predicted_source [B, L] long: ``logits.argmax(-1)``, the predicted group id of every position.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    predicted_source: torch.LongTensor | None = None


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
# Copied from mergevq_hf.models.tokenizer.modeling_mergevq.DropPath
class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``prob`` (training only)."""

    def __init__(self, prob: float = 0.0):
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prob == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.prob)
        return x * keep / (1 - self.prob)


# Copied from mergevq_hf.models.tokenizer.modeling_mergevq.Mlp
class Mlp(nn.Module):
    """Linear-GELU-Linear (timm ``Mlp`` names: fc1, fc2); ``grid`` is for subclasses that mix spatially."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class CrossAttentionBlock(nn.Module):
    """q = q + gamma1 * CrossAttn(norm1(q), kv);  q = q + gamma2 * Mlp(norm2(q)).

    The keys/values are not normalised inside the block (they come from ``norm_in``), as in the official code.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, layer_scale_init: float, drop_path: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def attention(self, q: torch.Tensor, kv: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """q [B, L, dim], kv [B, K, dim], attn_mask [B, 1, 1, K] bool (True = attend) -> [B, L, dim]."""
        batch, queries, dim = q.shape
        head_dim = dim // self.num_heads
        q = self.q(q).reshape(batch, queries, self.num_heads, head_dim).transpose(1, 2)
        k, v = self.kv(kv).reshape(batch, kv.shape[1], 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # scale head_dim**-0.5, as official
        return self.proj(x.transpose(1, 2).reshape(batch, queries, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = q + self.drop_path(self.gamma1 * self.attention(self.norm1(q), kv, attn_mask))
        q = q + self.drop_path(self.gamma2 * self.mlp(self.norm2(q)))
        return q


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate on both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def source_recovery_loss(
    logits: torch.Tensor, source: torch.Tensor, token_mask: torch.Tensor | None = None, loss_type: str = "bce"
) -> torch.Tensor:
    """Source loss between predicted logits [B, L, K] and true group ids ``source`` [B, L].

    ``"bce"`` (paper Eq. 11): with S_hat = softmax(logits, -1) and S the one-hot of ``source``,
    ``-sum_{k} [S log S_hat + (1 - S) log(1 - S_hat)]`` per position, averaged over the B*L positions
    (the paper writes a plain sum; the mean keeps the scale independent of batch size and L).
    ``"ce"``: only the first term, i.e. ``F.cross_entropy`` averaged over positions.
    Masked tokens (``token_mask`` False) have S_hat = 0 and add nothing. Computed in float32.
    """
    log_probs = logits.float().log_softmax(dim=-1)
    loss = -log_probs.gather(-1, source[..., None]).squeeze(-1)  # [B, L]
    if loss_type == "bce":
        others = torch.ones_like(log_probs)
        if token_mask is not None:
            others = others * token_mask[:, None, :].to(others.dtype)
        others = others.scatter(-1, source[..., None], 0.0)
        # clamp: -inf (masked) -> finite with zero gradient; p -> 1 caps -log(1 - p) at ~13.8 per entry
        log_not = _log1mexp(log_probs.clamp(min=-1e4, max=math.log1p(-1e-6)))
        loss = loss - (log_not * others).sum(-1)
    elif loss_type != "ce":
        raise ValueError(f"loss_type={loss_type!r}; allowed: ('bce', 'ce')")
    return loss.mean()


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------
class SourceRecoveryPreTrainedModel(PreTrainedModel):
    config_class = SourceRecoveryConfig
    config: SourceRecoveryConfig
    base_model_prefix = "recovery"
    main_input_name = "quantized"
    _no_split_modules = ["CrossAttentionBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # Official init_weights: trunc_normal(0.02) Linear weights, zero biases, LayerNorm 1/0,
        # rec_tokens normal(1e-6); LayerScale gammas at their init value.
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, CrossAttentionBlock):
            nn.init.constant_(module.gamma1, self.config.layer_scale_init)
            nn.init.constant_(module.gamma2, self.config.layer_scale_init)
        elif isinstance(module, nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, SourceRecoveryModel):
            nn.init.normal_(module.rec_tokens, std=1e-6)


class SourceRecoveryModel(SourceRecoveryPreTrainedModel):
    """Predicts the source (group id of every grid position) from K quantized MergeVQ tokens.

    K may change from call to call (1..L); a batch of samples with different K is padded to the largest K
    and passed with ``token_mask``.

    Example:
        >>> enc = tokenizer.encode(pixels, num_tokens=16)           # enc.quantized [B,16,D], enc.source [B,L]
        >>> out = recovery(enc.quantized, source=enc.source)        # out.loss, out.logits [B,L,16]
        >>> codes = tokenizer.unmerge(enc.indices, recovery.predict_source(enc.quantized))
    """

    def __init__(self, config: SourceRecoveryConfig):
        super().__init__(config)
        dim = config.dim
        self.rec_embed = nn.Linear(config.code_dim, dim, bias=True)
        self.rec_tokens = nn.Parameter(torch.zeros(1, config.num_positions, dim))
        self.pos_embed = nn.Embedding(config.num_positions, dim) if config.use_positions else None
        self.norm_in = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(dim, config.num_heads, config.mlp_ratio, config.layer_scale_init, config.drop_path_rate)
            for _ in range(config.num_layers)
        )
        self.rec_head = nn.Linear(dim, dim, bias=True)
        self.post_init()

    # ---------------------------------------------------------------- checks
    def _check_quantized(self, quantized: torch.Tensor) -> None:
        if not isinstance(quantized, torch.Tensor):
            raise TypeError(f"quantized must be a torch.Tensor [B, K, D], got {type(quantized).__name__}")
        d, length = self.config.code_dim, self.config.num_positions
        if quantized.dim() != 3 or quantized.shape[-1] != d:
            raise ValueError(f"quantized has shape {tuple(quantized.shape)}; expected [B, K, {d}] (code_dim={d})")
        if not 1 <= quantized.shape[1] <= length:
            raise ValueError(f"quantized has K={quantized.shape[1]} tokens; allowed 1..{length} (L)")
        if not quantized.is_floating_point():
            raise TypeError(f"quantized must be floating point (±1 codes), got dtype {quantized.dtype}")

    def _check_token_mask(self, token_mask: torch.Tensor, quantized: torch.Tensor) -> None:
        expected = tuple(quantized.shape[:2])
        if not isinstance(token_mask, torch.Tensor) or token_mask.dtype != torch.bool:
            raise TypeError(f"token_mask must be a bool torch.Tensor {list(expected)}, got {type(token_mask)}")
        if tuple(token_mask.shape) != expected:
            raise ValueError(f"token_mask has shape {tuple(token_mask.shape)}; expected {list(expected)} (B, K)")
        empty = (~token_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"token_mask has no real token in samples {empty}; allowed: at least one True per row")

    def _check_source(self, source: torch.Tensor, quantized: torch.Tensor, token_mask: torch.Tensor | None) -> None:
        batch, num_tokens = quantized.shape[:2]
        length = self.config.num_positions
        if not isinstance(source, torch.Tensor) or source.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"source must be an integer torch.Tensor [B, L], got {getattr(source, 'dtype', source)}")
        if tuple(source.shape) != (batch, length):
            raise ValueError(f"source has shape {tuple(source.shape)}; expected [{batch}, {length}] (B, L)")
        low, high = int(source.min()), int(source.max())
        if low < 0 or high >= num_tokens:
            raise ValueError(f"source has values in [{low}, {high}]; allowed 0..{num_tokens - 1} (K={num_tokens})")
        if token_mask is not None and not token_mask.gather(1, source.long()).all():
            raise ValueError("source points at padded tokens (token_mask False); allowed: real tokens only")

    def _check_positions(self, positions: torch.Tensor | None, quantized: torch.Tensor) -> None:
        if not self.config.use_positions:
            if positions is not None:
                raise ValueError("positions given, but this model was built without them (config.use_positions=False)")
            return
        expected = tuple(quantized.shape[:2])
        if positions is None:
            raise ValueError(
                f"this model reads token positions (config.use_positions=True): pass positions {list(expected)}"
            )
        if not isinstance(positions, torch.Tensor) or positions.dtype not in (torch.int64, torch.int32):
            raise TypeError(
                f"positions must be an integer torch.Tensor [B, K], got {getattr(positions, 'dtype', positions)}"
            )
        if tuple(positions.shape) != expected:
            raise ValueError(f"positions has shape {tuple(positions.shape)}; expected {list(expected)} (B, K)")
        low, high = int(positions.min()), int(positions.max())
        if low < 0 or high >= self.config.num_positions:
            raise ValueError(f"positions has values in [{low}, {high}]; allowed 0..{self.config.num_positions - 1} (L)")

    # ---------------------------------------------------------------- API
    def forward(
        self,
        quantized: torch.Tensor,
        source: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        positions: torch.Tensor | None = None,
    ) -> SourceRecoveryOutput | tuple:
        """Score every (position, token) pair.

        Args:
            quantized: [B, K, code_dim] quantized tokens (kept-token order), 1 <= K <= L.
            source: optional [B, L] long true group ids in [0, K); when given, ``loss`` is the source loss.
            token_mask: optional [B, K] bool, False on padding tokens (they get -inf logits and are not attended).
            positions: [B, K] long raster position of every token (first position of its group); required when
                ``config.use_positions``, refused otherwise. Tokens may then come in any order: the output
                columns follow the input order.
            return_dict: ``False`` returns a tuple (``loss`` first only when computed).

        Returns:
            [`SourceRecoveryOutput`] with ``loss``, ``logits`` [B, L, K] and ``predicted_source`` [B, L].
        """
        self._check_quantized(quantized)
        attn_mask = None
        if token_mask is not None:
            self._check_token_mask(token_mask, quantized)
            quantized = quantized.masked_fill(~token_mask[..., None], 0.0)  # padding content never matters
            attn_mask = token_mask[:, None, None, :]
        if source is not None:
            self._check_source(source, quantized, token_mask)
        self._check_positions(positions, quantized)
        quantized = quantized.to(self.rec_embed.weight.dtype)

        kv = self.rec_embed(quantized)
        if self.pos_embed is not None:
            kv = kv + self.pos_embed(positions.long())
        kv = self.norm_in(kv)  # [B, K, dim]
        q = self.rec_tokens.expand(quantized.shape[0], -1, -1)  # [B, L, dim]
        for block in self.blocks:
            q = block(q, kv, attn_mask)
        logits = self.rec_head(q) @ self.rec_head(kv).transpose(1, 2)  # [B, L, K]
        if token_mask is not None:
            logits = logits.masked_fill(~token_mask[:, None, :], float("-inf"))

        loss = None
        if source is not None:
            loss = source_recovery_loss(logits, source.long(), token_mask, self.config.source_loss_type)
        out = SourceRecoveryOutput(loss=loss, logits=logits, predicted_source=logits.argmax(dim=-1))
        return out if return_dict is not False else out.to_tuple()

    @torch.no_grad()
    def predict_source(
        self, quantized: torch.Tensor, token_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None
    ) -> torch.LongTensor:
        """Predicted group id of every position: quantized [B, K, D] -> [B, L] long in [0, K)."""
        return self.forward(quantized, token_mask=token_mask, positions=positions).predicted_source


__all__ = [
    "SourceRecoveryModel",
    "SourceRecoveryOutput",
    "SourceRecoveryPreTrainedModel",
    "source_recovery_loss",
]
