"""MergeVQ tokenizer: hybrid CNN + ToMe-transformer encoder, LFQ, unmerge, AdaGN decoder.

Module and parameter names mirror the official release (ApexGen-X/MergeVQ) so its checkpoints load
key for key (see ``mergevq_hf.convert``).

Shapes: pixels [B, 3, H, W] in [-1, 1]; L = (H / f)^2 positions; K kept tokens; D = code_dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput

from .configuration_mergevq import MergeVQConfig
from .image_processing_mergevq import MergeVQImageProcessor
from .lfq import commitment_loss, entropy_terms, indices_to_codes, quantize
from .token_merging import (
    bipartite_soft_matching,
    max_removable,
    merge_owner,
    merge_schedule,
    merge_weighted_average,
    representative_positions,
    source_to_matrix,
)


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------
@dataclass
class MergeVQEncoderOutput(ModelOutput):
    """Result of [`MergeVQModel.encode`].

    indices [B, K] long: LFQ index of every kept token (kept-token order, which has no grid meaning).
    source [B, L] long in [0, K): the kept token each raster position belongs to (group ids).
    quantized [B, K, D]: ±1 codes with a straight-through gradient to ``latent``.
    latent [B, K, D]: pre-quantisation encoder output.
    token_sizes [B, K] long: positions merged into each kept token.
    cls_token [B, C]: final CLS hidden state; cls_features [B, dist_head_dim]: the alignment head on it.
    """

    indices: torch.LongTensor | None = None
    source: torch.LongTensor | None = None
    quantized: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None
    token_sizes: torch.LongTensor | None = None
    cls_token: torch.FloatTensor | None = None
    cls_features: torch.FloatTensor | None = None


@dataclass
class MergeVQModelOutput(ModelOutput):
    """Result of [`MergeVQModel.forward`]: reconstruction plus the tokenizer's own loss terms.

    loss = reconstruction_loss (L1) + commitment_weight * commitment_loss + entropy_weight * entropy_loss.
    Perceptual / GAN / alignment / source losses live in ``mergevq_hf.training``; ``quantized`` [B, K, D]
    (straight-through) feeds a source-recovery model there.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    source: torch.LongTensor | None = None
    quantized: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    entropy_loss: torch.FloatTensor | None = None
    per_sample_entropy: torch.FloatTensor | None = None
    codebook_entropy: torch.FloatTensor | None = None
    cls_features: torch.FloatTensor | None = None


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice (no bias), 1x1 shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(32, out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        # without autograd (encode / decode under no_grad or inference_mode) SiLU and the residual add run in place:
        # the same values, three full-resolution temporaries fewer per block
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        return h.add_(shortcut) if inplace else h + shortcut


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


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention; ``size`` [B, t, 1] adds log(size) to the logits (proportional attention).
    Returns the output and the keys [B, heads, t, head_dim] (ToMe's merge metric)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = None if size is None else size.log()[:, None, None, :, 0]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim)), k


class Mlp(nn.Module):
    """Linear-GELU-Linear (timm ``Mlp`` names: fc1, fc2); ``grid`` is for subclasses that mix spatially."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MixMlp(Mlp):
    """Decoder MLP: fc1 -> depthwise 3x3 conv on the token grid -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.fc1(x)
        batch, tokens, channels = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(batch, channels, *grid)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(x))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block with LayerScale. With ``r > 0`` it applies ToMe between attention and MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, init_value: float, drop_path: float, mix_mlp: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_value)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = (MixMlp if mix_mlp else Mlp)(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_value)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        size: torch.Tensor | None = None,
        owner: torch.Tensor | None = None,
        r: int = 0,
        grid: tuple[int, int] | None = None,
        proportional: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        attn_out, keys = self.attn(self.norm1(x), size if proportional else None)
        x = x + self.drop_path(self.ls1(attn_out))
        if r > 0:
            plan = bipartite_soft_matching(keys.mean(1), r, protect_first=True)
            owner = merge_owner(owner, plan, x.shape[1])
            x, size = merge_weighted_average(x, size, plan)
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x), grid)))
        return x, size, owner


class TransformerStack(nn.Module):
    """``attn`` of the official encoder (CLS + ToMe blocks) and decoder (depthwise positional conv)."""

    def __init__(self, config: MergeVQConfig, dim: int, with_cls_token: bool, decoder: bool):
        super().__init__()
        heads = config.heads_for(dim)
        if dim % heads:
            raise ValueError(f"transformer width {dim} is not divisible by {heads} heads")
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if decoder:
            self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        rates = torch.linspace(0 if decoder else config.drop_path_rate, 0.0, config.num_att_blocks).tolist()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, config.mlp_ratio, config.layer_scale_init, rate, mix_mlp=decoder)
            for rate in rates
        )


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then scale/bias from the code map: gamma(std) and beta(mean) per channel."""

    def __init__(self, code_dim: int, channels: int):
        super().__init__()
        self.gn = nn.GroupNorm(32, channels, eps=1e-6, affine=False)
        self.gamma = nn.Linear(code_dim, channels)
        self.beta = nn.Linear(code_dim, channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = style.flatten(2)
        scale = self.gamma((style.var(dim=-1) + 1e-6).sqrt())[..., None, None]  # unbiased var, as official
        bias = self.beta(style.mean(dim=-1))[..., None, None]
        return self.gn(x) * scale + bias


def depth_to_space(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """DCR depth-to-space: out[c, h*b + i, w*b + j] = in[(i*b + j) * C + c, h, w] (not pixel_shuffle's order)."""
    batch, channels, height, width = x.shape
    out = channels // block**2
    x = x.view(batch, block, block, out, height, width).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(batch, out, height * block, width * block)


class Upsampler(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.conv1(x), 2)


# --------------------------------------------------------------------------------------------------
# Encoder / decoder
# --------------------------------------------------------------------------------------------------
class MergeVQEncoder(nn.Module):
    """pixels -> (latent [B, K, D], source [B, L], token sizes [B, K], final CLS [B, C])."""

    def __init__(self, config: MergeVQConfig):
        super().__init__()
        self.config = config
        width = config.encoder_width
        if config.encoder_type == "hybrid":
            self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1, bias=False)
            self.down = nn.ModuleList()
            in_mult = (1, *config.ch_mult)
            for level, mult in enumerate(config.ch_mult):
                stage = nn.Module()
                channels, out = config.ch * in_mult[level], config.ch * mult
                stage.block = nn.ModuleList()
                for _ in range(config.num_res_blocks):
                    stage.block.append(ResBlock(channels, out))
                    channels = out
                if level < len(config.ch_mult) - 1:
                    stage.downsample = nn.Conv2d(out, out, 3, stride=2, padding=1)
                self.down.append(stage)
        else:
            patch = config.downsample_factor
            self.conv_in = nn.Sequential(
                nn.Conv2d(config.in_channels, width, patch, stride=patch), nn.GroupNorm(width, width, eps=1e-6)
            )
        self.attn = TransformerStack(config, width, with_cls_token=True, decoder=False)
        self.norm_out = nn.GroupNorm(32, width, eps=1e-6)
        self.conv_out = nn.Conv2d(width, config.code_dim, 1)
        hidden = 4 * width
        if config.dist_head == "layer3":
            self.dist_head = nn.Sequential(
                nn.Linear(width, hidden),
                nn.GELU(),
                nn.Linear(hidden, hidden),
                nn.GELU(),
                nn.Linear(hidden, config.dist_head_dim),
            )
        elif config.dist_head == "layer2":
            self.dist_head = nn.Sequential(
                nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, config.dist_head_dim)
            )
        else:
            self.dist_head = None

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CNN / patch stage: pixels -> token grid [B, C, h, w]."""
        x = self.conv_in(pixel_values)
        if self.config.encoder_type == "hybrid":
            for stage in self.down:
                for block in stage.block:
                    x = block(x)
                if hasattr(stage, "downsample"):
                    x = stage.downsample(x)
        return x

    def forward(self, pixel_values: torch.Tensor, schedule: list[int]):
        grid = self.features(pixel_values)
        batch, _, height, width = grid.shape
        num_positions = height * width
        x = torch.cat([self.attn.cls_token.expand(batch, -1, -1), grid.flatten(2).transpose(1, 2)], dim=1)
        owner = torch.arange(1, num_positions + 1, device=x.device).expand(batch, -1)  # index 0 is CLS
        size = None
        for block, r in zip(self.attn.blocks, schedule):
            x, size, owner = block(x, size, owner, r, proportional=self.config.proportional_attention)
        cls_token, tokens = x[:, 0], x[:, 1:]
        sizes = torch.ones_like(tokens[..., 0], dtype=torch.long) if size is None else size[:, 1:, 0].round().long()
        if self.conv_out is None:  # the encoder of MergeVQForImageClassification has no quantiser head
            return None, owner - 1, sizes, cls_token
        # head: statistics over the K kept tokens (unweighted), then a per-token 1x1 conv
        h = F.silu(self.norm_out(tokens.transpose(1, 2)))
        latent = self.conv_out(h[..., None])[..., 0].transpose(1, 2)
        return latent, owner - 1, sizes, cls_token


class MergeVQDecoder(nn.Module):
    """Code map [B, D, h, w] -> pixels [B, out_channels, H, W]."""

    def __init__(self, config: MergeVQConfig):
        super().__init__()
        levels = len(config.ch_mult)
        channels = config.decoder_width
        self.conv_in = nn.Conv2d(config.code_dim, channels, 3, padding=1)
        self.attn = TransformerStack(config, channels, with_cls_token=False, decoder=True)
        self.up = nn.ModuleList()
        self.adaptive = nn.ModuleList()
        for level in reversed(range(levels)):
            self.adaptive.insert(0, AdaptiveGroupNorm(config.code_dim, channels))
            stage = nn.Module()
            stage.block = nn.ModuleList()
            out = config.ch * config.ch_mult[level]
            num_blocks = config.num_res_blocks + (config.decoder_extra_res_blocks if level > 0 else 0)
            for _ in range(num_blocks):
                stage.block.append(ResBlock(channels, out))
                channels = out
            if level > 0:
                stage.upsample = Upsampler(channels)
            self.up.insert(0, stage)
        self.norm_out = nn.GroupNorm(32, channels, eps=1e-6)
        self.conv_out = nn.Conv2d(channels, config.out_channels, 3, padding=1)

    def forward(self, code_map: torch.Tensor) -> torch.Tensor:
        style = code_map
        x = self.conv_in(code_map)
        batch, channels, height, width = x.shape
        x = x + self.attn.pos_embed(x)
        x = x.flatten(2).transpose(1, 2)
        for block in self.attn.blocks:
            x, _, _ = block(x, grid=(height, width))
        x = x.transpose(1, 2).reshape(batch, channels, height, width)
        for level in reversed(range(len(self.up))):
            x = self.adaptive[level](x, style)
            for block in self.up[level].block:
                x = block(x)
            if level > 0:
                x = self.up[level].upsample(x)
        return self.conv_out(F.silu(self.norm_out(x)))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------
class MergeVQPreTrainedModel(PreTrainedModel):
    config_class = MergeVQConfig
    config: MergeVQConfig
    base_model_prefix = "mergevq"
    main_input_name = "pixel_values"
    _no_split_modules = ["TransformerBlock", "ResBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # Official init: PyTorch defaults in the CNN parts, trunc_normal(0.02) inside the transformer stacks.
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.GroupNorm, nn.LayerNorm)):
            module.reset_parameters()
        elif isinstance(module, LayerScale):
            nn.init.constant_(module.gamma, module.init_value)
        elif isinstance(module, TransformerStack):
            std = self.config.initializer_range
            for sub in module.modules():
                if isinstance(sub, (nn.Linear, nn.Conv2d)):
                    nn.init.trunc_normal_(sub.weight, std=std)
                    if sub.bias is not None:
                        nn.init.zeros_(sub.bias)
            if hasattr(module, "cls_token"):
                nn.init.normal_(module.cls_token, std=1e-6)

    # ---------------------------------------------------------------- shared by the tokenizer and the classifier
    def _check_pixels(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor [B, C, H, W], got {type(pixel_values).__name__}")
        c, r = self.config.in_channels, self.config.resolution
        if pixel_values.dim() != 4 or pixel_values.shape[1] != c:
            raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}; expected [B, {c}, {r}, {r}]")
        if tuple(pixel_values.shape[2:]) != (r, r):
            raise ValueError(
                f"pixel_values has resolution {tuple(pixel_values.shape[2:])}; this tokenizer takes {r}x{r}"
            )
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel_values must be floating point in [-1, 1], got dtype {pixel_values.dtype}; "
                "convert uint8 images with x / 127.5 - 1"
            )
        if pixel_values.numel() == 0:
            return
        low, high = torch.stack(torch.aminmax(pixel_values.detach())).tolist()  # one reduction; NaN propagates
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("pixel_values contains NaN or infinite values; expected finite values in [-1, 1]")
        if low < -1 - 1e-3 or high > 1 + 1e-3:
            raise ValueError(
                f"pixel_values range [{low:.4g}, {high:.4g}] is outside the expected [-1, 1]; "
                "convert uint8 images with x / 127.5 - 1"
            )

    def _check_num_tokens(self, num_tokens: int | None) -> int:
        if num_tokens is None:
            return self.config.num_tokens
        if isinstance(num_tokens, torch.Tensor) and num_tokens.numel() == 1:
            num_tokens = int(num_tokens)
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int):
            raise TypeError(f"num_tokens must be an int, got {num_tokens!r}")
        if not self.min_num_tokens <= num_tokens <= self.config.num_positions:
            raise ValueError(
                f"num_tokens={num_tokens} is out of range; allowed {self.min_num_tokens}..{self.config.num_positions}"
                f" (at most L; {self.config.num_att_blocks} merging blocks can halve the tokens at most"
                f" {self.config.num_att_blocks} times)"
            )
        return num_tokens

    @property
    def min_num_tokens(self) -> int:
        """Smallest K the encoder can reach (1 whenever 2^num_att_blocks >= L, e.g. every official variant)."""
        num_positions = self.config.num_positions
        return num_positions - max_removable(num_positions + 1, self.config.num_att_blocks)

    def merge_schedule(self, num_tokens: int | None = None) -> list[int]:
        """Tokens removed by each encoder block to keep ``num_tokens``."""
        num_tokens = self._check_num_tokens(num_tokens)
        return merge_schedule(
            self.config.num_positions, num_tokens, self.config.num_att_blocks, self.config.merge_schedule
        )


class MergeVQModel(MergeVQPreTrainedModel):
    """The MergeVQ tokenizer. Stateless: K is chosen per call and ``source`` is returned, not kept.

    Example:
        >>> tok = MergeVQModel(MergeVQConfig.from_preset("tiny"))
        >>> enc = tok.encode(pixels, num_tokens=16)           # enc.indices [B,16], enc.source [B,L]
        >>> images = tok.decode(tok.unmerge(enc.indices, enc.source))
    """

    def __init__(self, config: MergeVQConfig):
        super().__init__(config)
        self.encoder = MergeVQEncoder(config)
        self.decoder = MergeVQDecoder(config)
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' ``save_pretrained``, plus the matching :class:`MergeVQImageProcessor`
        (``preprocessor_config.json``, size = ``config.resolution``), so ``AutoImageProcessor.from_pretrained``
        works on every tokenizer folder."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.image_processor().save_pretrained(save_directory)

    def image_processor(self) -> MergeVQImageProcessor:
        """The image processor that feeds this tokenizer (resize + center-crop to its resolution, [-1, 1])."""
        return MergeVQImageProcessor(size=self.config.resolution)

    # ---------------------------------------------------------------- checks
    def _check_codes(self, codes: torch.Tensor, name: str) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be an integer torch.Tensor, got {getattr(codes, 'dtype', type(codes))}")
        if codes.dim() != 2:
            raise ValueError(f"{name} has shape {tuple(codes.shape)}; expected [B, N]")
        limit = 2**self.config.code_dim
        if codes.numel() and (codes.min() < 0 or codes.max() >= limit):
            raise ValueError(f"{name} has values in [{int(codes.min())}, {int(codes.max())}]; allowed 0..{limit - 1}")

    # ---------------------------------------------------------------- API
    def encode(self, pixel_values: torch.Tensor, num_tokens: int | None = None) -> MergeVQEncoderOutput:
        """Encode pixels [B, C, H, W] in [-1, 1] into ``num_tokens`` (K) merged LFQ tokens and their source."""
        self._check_pixels(pixel_values)
        schedule = self.merge_schedule(num_tokens)
        latent, source, sizes, cls_token = self.encoder(pixel_values, schedule)
        quantized, indices = quantize(latent)
        head = self.encoder.dist_head
        return MergeVQEncoderOutput(
            indices=indices,
            source=source,
            quantized=quantized,
            latent=latent,
            token_sizes=sizes,
            cls_token=cls_token,
            cls_features=None if head is None else head(cls_token),
        )

    @staticmethod
    def unmerge(tokens: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Give every position its group's value: tokens [B, K] or [B, K, D], source [B, L] -> [B, L] / [B, L, D]."""
        if tokens.dim() == 2:
            return tokens.gather(1, source)
        return tokens.gather(1, source[..., None].expand(-1, -1, tokens.shape[-1]))

    @staticmethod
    def representative_positions(source: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Raster position of each of the K tokens: the first position of its group, [B, K] long."""
        return representative_positions(source, num_tokens)

    @staticmethod
    def source_matrix(source: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Dense 0/1 source matrix S [B, K, L] from the group ids ``source`` [B, L]."""
        return source_to_matrix(source, num_tokens)

    def attach_source_recovery(self, model) -> None:
        """Use ``model`` (a ``SourceRecoveryModel``) in :meth:`decode` when K codes come without a source.
        Kept outside this module's parameters, so the tokenizer's checkpoint stays the tokenizer's alone."""
        object.__setattr__(self, "_source_recovery", model)

    def decode(
        self,
        codes: torch.Tensor,
        source: torch.Tensor | None = None,
        source_recovery=None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode codes into pixels [B, C, H, W] (not clamped).

        codes: a per-position code map [B, L]; or K codes [B, K] with their ``source`` [B, L]; or K codes alone,
        whose source is then predicted by ``source_recovery`` (or the attached one, see
        :meth:`attach_source_recovery`), as in random-order generation; ``positions`` [B, K] (each token's
        representative raster position) is passed to a recovery model that reads positions.
        """
        self._check_codes(codes, "codes")
        num_positions = self.config.num_positions
        recovery = source_recovery or getattr(self, "_source_recovery", None)
        if source is None and codes.shape[1] != num_positions and recovery is not None:
            extra = {} if positions is None else {"positions": positions}
            source = recovery.predict_source(self.indices_to_quantized(codes), **extra)
        if source is not None:
            self._check_codes(source, "source")
            if source.shape[1] != num_positions or source.max() >= codes.shape[1]:
                raise ValueError(
                    f"source must be [B, {num_positions}] with values < {codes.shape[1]} (K), "
                    f"got shape {tuple(source.shape)} and max {int(source.max())}"
                )
            codes = self.unmerge(codes, source)
        if codes.shape[1] != num_positions:
            raise ValueError(
                f"codes has {codes.shape[1]} positions; decode needs L={num_positions} "
                "(pass source= to unmerge K tokens, or a source_recovery model)"
            )
        return self.decode_quantized(self.indices_to_quantized(codes))

    def indices_to_quantized(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices [...] -> the ±1 quantized vectors [..., code_dim] (the decoder's dtype)."""
        return indices_to_codes(indices.long(), self.config.code_dim, dtype=self.decoder.conv_in.weight.dtype)

    def decode_quantized(self, quantized: torch.Tensor) -> torch.Tensor:
        """Decode per-position quantized vectors [B, L, D] (differentiable path used in training)."""
        side = self.config.grid_size
        code_map = quantized.transpose(1, 2).reshape(quantized.shape[0], self.config.code_dim, side, side)
        return self.decoder(code_map)

    def forward(
        self, pixel_values: torch.Tensor, num_tokens: int | None = None, return_dict: bool | None = None
    ) -> MergeVQModelOutput | tuple:
        enc = self.encode(pixel_values, num_tokens=num_tokens)
        reconstruction = self.decode_quantized(self.unmerge(enc.quantized, enc.source))
        cfg = self.config
        per_sample, codebook = entropy_terms(enc.latent, cfg.entropy_temperature, cfg.entropy_chunk_elements)
        entropy = cfg.sample_entropy_weight * per_sample - cfg.codebook_entropy_weight * codebook
        commit = commitment_loss(enc.latent)
        rec_loss = (reconstruction - pixel_values).abs().mean()
        loss = rec_loss + cfg.commitment_weight * commit + cfg.entropy_weight * entropy
        out = MergeVQModelOutput(
            loss=loss,
            reconstruction=reconstruction,
            indices=enc.indices,
            source=enc.source,
            reconstruction_loss=rec_loss,
            commitment_loss=commit,
            entropy_loss=entropy,
            per_sample_entropy=per_sample,
            codebook_entropy=codebook,
            cls_features=enc.cls_features,
            quantized=enc.quantized,
        )
        return out if return_dict is not False else out.to_tuple()


__all__ = ["MergeVQModel", "MergeVQPreTrainedModel", "MergeVQEncoderOutput", "MergeVQModelOutput"]


# --------------------------------------------------------------------------------------------------
class MergeVQForImageClassification(MergeVQPreTrainedModel):
    """The MergeVQ encoder with a classification head, for end-to-end fine-tuning (paper A.4, Table 1).

    Logits come from the encoder's final CLS state (LayerNorm + linear); the encoder merges the tokens down to
    ``num_tokens`` (K) as in the tokenizer. ``from_pretrained(tokenizer_folder, num_labels=C)`` takes the
    tokenizer's encoder weights (the decoder, the quantiser head and the alignment head are left out: they do not
    reach the logits) and starts a new head.
    ``labels``: class ids [B] or soft targets [B, C] (mixup / cutmix), both with cross-entropy.
    ``group_matcher`` gives timm's layer-wise lr decay its layers: the CNN / patch stage, each attention block,
    then the heads.
    """

    def __init__(self, config: MergeVQConfig):
        super().__init__(config)
        self.encoder = MergeVQEncoder(config)
        width = config.encoder_width
        self.fc_norm = nn.LayerNorm(width)
        self.classifier = nn.Linear(width, config.num_labels)
        # the quantiser head and the alignment head do not reach the logits: not part of this model
        self.encoder.norm_out = self.encoder.conv_out = self.encoder.dist_head = None
        self.post_init()

    def group_matcher(self, coarse: bool = False) -> dict:
        return {
            "stem": r"^encoder\.(?:conv_in|down|attn\.cls_token)",
            "blocks": [(r"^encoder\.attn\.blocks\.(\d+)", None), (r"^(?:fc_norm|classifier|encoder\.)", (99999,))],
        }

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        num_tokens: int | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        self._check_pixels(pixel_values)
        _, _, _, cls_token = self.encoder(pixel_values, self.merge_schedule(num_tokens))
        logits = self.classifier(self.fc_norm(cls_token))
        loss = None
        if labels is not None:
            if labels.dim() == 2 and labels.shape == logits.shape and labels.is_floating_point():
                loss = torch.sum(-labels * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            elif labels.dim() == 1 and not labels.is_floating_point():
                loss = F.cross_entropy(logits.float(), labels)
            else:
                raise ValueError(
                    f"labels must be class ids [B] (integer) or soft targets [B, {logits.shape[1]}] (float), "
                    f"got {tuple(labels.shape)} {labels.dtype}"
                )
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return ImageClassifierOutput(loss=loss, logits=logits)
