"""Configuration of the MergeVQ tokenizer (encoder with token merging, LFQ, decoder)."""

from __future__ import annotations

import copy
from dataclasses import field

from transformers import PreTrainedConfig

ENCODER_TYPES = ("hybrid", "patch")
DIST_HEADS = ("layer3", "layer2", None)
MERGE_SCHEDULE_KINDS = ("linear", "square")

# Official variants (ApexGen-X/MergeVQ configs/gpu_s1, paper Table A1). "G": 32x32 grid (L=1024),
# "G+R": 16x16 grid (L=256) with the CLS alignment head, "R": ViT-B patch encoder (L=256).
PRESETS: dict[str, dict] = {
    "mergevq-g-d32": dict(ch=32, ch_mult=[2, 4, 8, 12], num_tokens=256, dist_head="layer2"),
    "mergevq-g-d64": dict(ch=64, ch_mult=[1, 2, 4, 8], num_tokens=256, dist_head="layer2"),
    "mergevq-gr-d32": dict(ch=32, ch_mult=[2, 2, 4, 8, 12], num_tokens=144),
    "mergevq-gr-d64": dict(ch=64, ch_mult=[1, 1, 2, 4, 8], num_tokens=144),
    "mergevq-gr-d96": dict(ch=96, ch_mult=[1, 1, 2, 4, 8], num_heads=12, num_tokens=144),
    "mergevq-r-vitb": dict(
        encoder_type="patch", ch=64, ch_mult=[1, 1, 2, 4, 8], patch_embed_dim=768, head_dim=64, num_tokens=64
    ),
}
# Tiny random-weight configurations for tests and CPU experiments (32x32 images, 8x8 grid); "tiny-r" is the
# same with the R variant's patch encoder.
_TINY = dict(
    resolution=32,
    ch=32,
    ch_mult=[1, 1, 2],
    num_res_blocks=1,
    num_att_blocks=6,
    num_heads=4,
    code_dim=8,
    num_tokens=36,
    dist_head_dim=32,
)
PRESETS["tiny"] = _TINY
PRESETS["tiny-r"] = {**_TINY, "encoder_type": "patch", "patch_embed_dim": 64}


class MergeVQConfig(PreTrainedConfig):
    r"""Configuration of [`MergeVQModel`].

    Names follow the official release where one exists (``ch``, ``ch_mult``, ``num_res_blocks``,
    ``num_att_blocks``); ``num_tokens`` is only the default K, every call can choose its own.

    Args:
        encoder_type: ``"hybrid"`` (CNN stages then ToMe transformer; G and G+R) or ``"patch"``
            (16x16-style patch conv then ToMe transformer; R).
        resolution: input height = width in pixels.
        ch, ch_mult: CNN widths; the token grid is ``resolution / 2**(len(ch_mult) - 1)`` on a side and
            the transformer width is ``ch * ch_mult[-1]`` (hybrid) or ``patch_embed_dim`` (patch).
        num_res_blocks: ResBlocks per encoder level; the decoder has ``decoder_extra_res_blocks`` more
            on every level but the first.
        num_att_blocks, num_heads, head_dim: transformer depth and heads (``head_dim`` set means
            ``max(width // head_dim, num_heads)`` heads, as in the official code).
        code_dim: LFQ bits; the codebook has ``2**code_dim`` codes.
        dist_head, dist_head_dim: MLP head on the final CLS token for the representation alignment
            (``"layer3"``: Linear-GELU-Linear-GELU-Linear, ``"layer2"``: Linear-GELU-LN-Linear, None: no head).
        num_tokens: default number K of tokens kept after merging.
        merge_schedule: ``"linear"`` (official) or ``"square"`` (paper) per-block merge counts.
        proportional_attention: add log(token size) to the attention logits.
        entropy_temperature, commitment_weight, entropy_weight, sample_entropy_weight,
        codebook_entropy_weight: LFQ loss settings.
        entropy_chunk_elements: memory bound (in floats) of one chunk of the exact entropy loss.
    """

    model_type = "mergevq"

    encoder_type: str = "hybrid"
    in_channels: int = 3
    out_channels: int = 3
    resolution: int = 256
    ch: int = 64
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 4, 8])
    num_res_blocks: int = 4
    decoder_extra_res_blocks: int = 1
    num_att_blocks: int = 12
    num_heads: int = 8
    head_dim: int | None = None
    patch_embed_dim: int = 768
    mlp_ratio: float = 4.0
    layer_scale_init: float = 1e-5
    drop_path_rate: float = 0.0
    code_dim: int = 18
    dist_head: str | None = "layer3"
    dist_head_dim: int = 768
    num_tokens: int = 144
    merge_schedule: str = "linear"
    proportional_attention: bool = True
    entropy_temperature: float = 0.01
    commitment_weight: float = 0.25
    entropy_weight: float = 0.1
    sample_entropy_weight: float = 1.0
    codebook_entropy_weight: float = 1.0
    entropy_chunk_elements: int = 1 << 24
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.encoder_type not in ENCODER_TYPES:
            raise ValueError(f"encoder_type={self.encoder_type!r}; allowed: {ENCODER_TYPES}")
        if self.dist_head not in DIST_HEADS:
            raise ValueError(f"dist_head={self.dist_head!r}; allowed: {DIST_HEADS}")
        if self.merge_schedule not in MERGE_SCHEDULE_KINDS:
            raise ValueError(f"merge_schedule={self.merge_schedule!r}; allowed: {MERGE_SCHEDULE_KINDS}")
        if not 1 <= self.code_dim <= 62:
            raise ValueError(f"code_dim={self.code_dim}; allowed: 1..62 (indices are int64)")
        if self.resolution % self.downsample_factor:
            raise ValueError(
                f"resolution={self.resolution} is not divisible by the downsampling factor {self.downsample_factor}"
            )
        if not 1 <= self.num_tokens <= self.num_positions:
            raise ValueError(f"num_tokens={self.num_tokens}; allowed: 1..{self.num_positions} (L)")
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> MergeVQConfig:
        """A named official variant (``mergevq-g-d32``, ``mergevq-g-d64``, ``mergevq-gr-d32``,
        ``mergevq-gr-d64``, ``mergevq-gr-d96``, ``mergevq-r-vitb``) or a tiny test preset."""
        if name not in PRESETS:
            raise ValueError(f"unknown MergeVQ preset {name!r}; allowed: {sorted(PRESETS)}")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def grid_size(self) -> int:
        """Side of the token grid before merging."""
        return self.resolution // self.downsample_factor

    @property
    def num_positions(self) -> int:
        """L: tokens before merging (= positions of the decoder grid)."""
        return self.grid_size**2

    @property
    def encoder_width(self) -> int:
        return self.patch_embed_dim if self.encoder_type == "patch" else self.ch * self.ch_mult[-1]

    @property
    def decoder_width(self) -> int:
        return self.ch * self.ch_mult[-1]

    def heads_for(self, width: int) -> int:
        return self.num_heads if self.head_dim is None else max(width // self.head_dim, self.num_heads)


__all__ = ["MergeVQConfig", "PRESETS"]
