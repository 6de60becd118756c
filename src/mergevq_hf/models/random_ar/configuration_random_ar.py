"""Configuration of the random-order generator over MergeVQ's K merged tokens (paper Sec. 4.2, RandAR-style)."""

from __future__ import annotations

import copy
import math
from dataclasses import field

from transformers import PreTrainedConfig

# LlamaGen body sizes as MergeAR's presets (18 bits as 6 + 12, next-sub-token prediction with the official 2
# intra-token blocks); tiny ones for tests.
PRESETS: dict[str, dict] = {
    "random-ar-b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, factorized_num_layers=2),
    "random-ar-l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, factorized_num_layers=2),
    "random-ar-xl": dict(hidden_size=1280, num_hidden_layers=36, num_attention_heads=20, factorized_num_layers=2),
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        code_dim=8,
        factorized_bits=[],
        num_positions=64,
        num_classes=10,
    ),
    "tiny-factorized": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        code_dim=8,
        factorized_bits=[3, 5],
        num_positions=64,
        num_classes=10,
    ),
    "tiny-subtoken": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        code_dim=8,
        factorized_bits=[3, 5],
        factorized_num_layers=2,
        num_positions=64,
        num_classes=10,
    ),
}


class RandomARConfig(PreTrainedConfig):
    r"""Configuration of [`RandomARForCausalLM`].

    Sequence: ``[class, merge instruction K, P_1, x_1, ..., P_K, x_K]``: the K merged tokens of an image in a
    random order, each code ``x_i`` preceded by a position instruction ``P_i`` that says where it goes (the first
    raster position of its merge group). ``P_i`` is one shared learned vector rotated by the 2D RoPE of that
    position; the output at ``P_i`` predicts ``x_i``.

    Args:
        code_dim: LFQ bits; codes are in [0, 2**code_dim).
        factorized_bits: split of the code bits (least significant first) into factors, e.g. ``[6, 12]``; empty
            for one plain head.
        factorized_num_layers: 0 (default, folders saved before this field): the factors are predicted
            independently. N > 0: next-sub-token prediction (official stage 2, two factors): N more decoder blocks
            run over ``[h, embedding_0(f0)]`` at every position instruction, slot 0 predicts f0 and slot 1 predicts
            f1 given f0. The ``random-ar-b/l/xl`` presets use the official 2.
        num_positions: L, positions of the token grid (a square); K <= L tokens are generated.
        num_classes: class labels; id ``num_classes`` is the null class (classifier-free guidance).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: LLaMA decoder sizes
            (``intermediate_size`` None: 8/3 * hidden rounded up to a multiple of 256, as LlamaGen).
        rope_theta: base of the 2D rotary embedding.
        resid_dropout, ffn_dropout, token_dropout, attention_dropout: dropouts (training only).
        class_dropout_prob: probability of the null class in training (CFG).
        label_smoothing: of the cross-entropy.
    """

    model_type = "mergevq_random_ar"

    code_dim: int = 18
    factorized_bits: list[int] = field(default_factory=lambda: [6, 12])
    factorized_num_layers: int = 0
    num_positions: int = 256
    num_classes: int = 1000
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    attention_dropout: float = 0.0
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    token_dropout: float = 0.1
    class_dropout_prob: float = 0.1
    label_smoothing: float = 0.1
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    use_cache: bool = True
    vocab_size: int | None = None  # size of the output distribution, set to 2**code_dim

    def __post_init__(self, **kwargs):
        if not 1 <= self.code_dim <= 30:
            raise ValueError(f"code_dim={self.code_dim}; allowed 1..30")
        if self.factorized_bits and (sum(self.factorized_bits) != self.code_dim or min(self.factorized_bits) < 1):
            raise ValueError(
                f"factorized_bits={self.factorized_bits} must be positive and sum to code_dim={self.code_dim}"
            )
        if self.factorized_num_layers < 0 or (self.factorized_num_layers and len(self.factorized_bits) != 2):
            raise ValueError(
                f"factorized_num_layers={self.factorized_num_layers} with factorized_bits={self.factorized_bits}: "
                "allowed 0, or N > 0 with exactly two factors (next-sub-token prediction)"
            )
        side = math.isqrt(self.num_positions)
        if side * side != self.num_positions:
            raise ValueError(f"num_positions={self.num_positions} is not a square grid (L = side^2)")
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 4:
            raise ValueError(
                f"hidden_size={self.hidden_size} / num_attention_heads={self.num_attention_heads} must give a head "
                "dimension divisible by 4 (2D rotary embedding)"
            )
        self.vocab_size = 2**self.code_dim
        if self.intermediate_size is None:
            hidden = int(2 * 4 * self.hidden_size / 3)
            self.intermediate_size = 256 * math.ceil(hidden / 256)
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> RandomARConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown RandomAR preset {name!r}; allowed: {sorted(PRESETS)}")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})

    @property
    def vocab_size_codes(self) -> int:
        return 2**self.code_dim

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.num_positions)

    @property
    def factors(self) -> list[int]:
        """Bits of each output factor (one factor = plain head)."""
        return list(self.factorized_bits) or [self.code_dim]

    @property
    def num_start_tokens(self) -> int:
        return 2

    @property
    def position_instruction_id(self) -> int:
        """The id of the position-instruction token (its position is given separately)."""
        return self.vocab_size_codes + self.num_classes + 1 + self.num_positions + 1

    @property
    def total_vocab_size(self) -> int:
        """Codes, then class ids (incl. null), then merge instructions K = 0..L, then the position instruction."""
        return self.position_instruction_id + 1


__all__ = ["RandomARConfig", "PRESETS"]
