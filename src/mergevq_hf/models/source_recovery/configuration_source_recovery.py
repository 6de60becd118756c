"""Configuration of the MergeVQ source-recovery model (paper Sec. 3.2 / A.1, Table A2)."""

from __future__ import annotations

from transformers import PreTrainedConfig

SOURCE_LOSS_TYPES = ("bce", "ce")


class SourceRecoveryConfig(PreTrainedConfig):
    r"""Configuration of [`SourceRecoveryModel`].

    The model reads the K quantized tokens of a MergeVQ tokenizer and predicts, for each of the L grid
    positions, which of the K tokens it was merged into (the source matrix). Defaults are the official
    ``SourceRecovery`` of ApexGen-X/MergeVQ (``rec_embed_dim=384``, 2 blocks, 8 heads, FFN 1536).

    Args:
        code_dim: width D of the quantized tokens (LFQ bits; 18 in every official variant).
        num_positions: L, positions of the token grid before merging (= learnable queries); 256 for a 16x16 grid.
        dim: width of the cross-attention decoder (``rec_embed_dim`` in the official code).
        num_layers: number of cross-attention blocks.
        num_heads: attention heads; must divide ``dim``.
        mlp_ratio: MLP hidden width is ``int(dim * mlp_ratio)``.
        layer_scale_init: initial value of the LayerScale gammas.
        drop_path_rate: stochastic-depth probability of every block's residual branches during training
            (the official code uses the same 0.1 in each block).
        source_loss_type: ``"bce"``: paper Eq. 11, binary cross-entropy between the softmax source matrix
            S_hat and the 0/1 source matrix S, summed over the K tokens and averaged over positions;
            ``"ce"``: categorical cross-entropy of each position's distribution over the K tokens against its
            true group (the first term of Eq. 11 alone).
        initializer_range: std of the truncated-normal init of the Linear weights.
        use_positions: also read each token's raster position (the first position of its merge group, see
            ``MergeVQModel.representative_positions``) through a learned embedding added to the token projection.
            Off in the official module (its tokens come in the encoder's kept-token order); on for the models this
            package trains, because a random-order generator produces K codes at chosen positions in any order.
    """

    model_type = "mergevq_source_recovery"

    code_dim: int = 18
    num_positions: int = 256
    dim: int = 384
    num_layers: int = 2
    num_heads: int = 8
    mlp_ratio: float = 4.0
    layer_scale_init: float = 1e-5
    drop_path_rate: float = 0.1
    source_loss_type: str = "bce"
    initializer_range: float = 0.02
    use_positions: bool = False

    def __post_init__(self, **kwargs):
        for name in ("code_dim", "num_positions", "dim", "num_layers", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed: an integer >= 1")
        if self.dim % self.num_heads:
            raise ValueError(
                f"dim={self.dim} is not divisible by num_heads={self.num_heads}; allowed: a divisor of dim"
            )
        if not self.mlp_ratio > 0 or int(self.dim * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio!r}; allowed: > 0 with int(dim * mlp_ratio) >= 1")
        if not self.layer_scale_init > 0:
            raise ValueError(f"layer_scale_init={self.layer_scale_init!r}; allowed: > 0")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={self.drop_path_rate!r}; allowed: 0 <= drop_path_rate < 1")
        if self.source_loss_type not in SOURCE_LOSS_TYPES:
            raise ValueError(f"source_loss_type={self.source_loss_type!r}; allowed: {SOURCE_LOSS_TYPES}")
        if not self.initializer_range > 0:
            raise ValueError(f"initializer_range={self.initializer_range!r}; allowed: > 0")
        super().__post_init__(**kwargs)


__all__ = ["SOURCE_LOSS_TYPES", "SourceRecoveryConfig"]
