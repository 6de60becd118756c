"""Convert an official MergeVQ stage-2 generator (``taming/modules/transformer/gpt.py`` class ``GPT`` inside
``cond_transformer_gpt.Net2NetTransformer``) into a [`MergeARForCausalLM`] folder.

What the official model is, in our terms: a raster generator with one class token (no merge instruction), the
class token's rotary rows zeroed (LlamaGen's table), no duplicate masking, the 18-bit code split into
``idx_pre`` = the ``factorized_bits[0]`` low bits and ``idx_post`` = the rest (the official factorized LFQ:
channel j of the pre part has weight 2**j, channel 6 + j of the post part 2**j, so code = pre + post << 6), and
next-sub-token prediction with ``factorized_n_layer`` intra-token blocks. Weights map one to one, except the
fused ``wqkv`` which is split into q/k/v.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import yaml

from ..models.mergear import MergeARConfig, MergeARForCausalLM
from .official import load_official_state_dict

logger = logging.getLogger(__name__)

# GPT(...) defaults of the official code, for keys a YAML leaves out
GPT_DEFAULTS = dict(
    spatial_n_layer=12,
    n_head=8,
    dim=256,
    factorized_n_layer=2,
    resid_dropout_p=0.0,
    attn_dropout_p=0.0,
    ffn_dropout_p=0.1,
    token_factorization=False,
    class_num=1000,
    token_drop=0.1,
    cls_token_num=1,
    rope_base=10000,
    norm_eps=1e-5,
    ffn_dim_multiplier=None,
    multiple_of=256,
    n_kv_head=None,
    factorized_k=2,
    factorized_bits=[9, 9],
)
LABEL_DROPOUT = 0.1  # LabelEmbedder's default; GPT never passes another


def stage2_params(raw: dict) -> dict | None:
    """The ``GPT`` keyword arguments of an official stage-2 YAML (``model.init_args.transformer_config.params``),
    or None when the YAML is not a stage-2 config."""
    model = raw.get("model", raw)
    args = model.get("init_args", model.get("params", model))
    transformer = args.get("transformer_config") if isinstance(args, dict) else None
    if not isinstance(transformer, dict):
        return None
    return {**GPT_DEFAULTS, **(transformer.get("params") or transformer.get("init_args") or {})}


def _find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


def stage2_config_from_params(params: dict, where: str = "config", **overrides) -> MergeARConfig:
    """MergeARConfig equal to an official ``GPT(**params)``."""
    if not params.get("token_factorization"):
        raise ValueError(f"{where}: token_factorization is false; only the factorized official GPT is supported")
    if params["cls_token_num"] != 1:
        raise ValueError(f"{where}: cls_token_num={params['cls_token_num']}; the official forward supports only 1")
    if params["n_kv_head"] not in (None, params["n_head"]):
        raise ValueError(f"{where}: n_kv_head={params['n_kv_head']} (grouped-query attention) is not supported")
    bits = [int(b) for b in params["factorized_bits"]]
    if params["factorized_k"] != 2 or len(bits) != 2:
        raise ValueError(f"{where}: factorized_k={params['factorized_k']}, factorized_bits={bits}; allowed: 2 factors")
    dim = int(params["dim"])
    hidden = int(2 * 4 * dim / 3)
    if params["ffn_dim_multiplier"] is not None:
        hidden = int(params["ffn_dim_multiplier"] * hidden)
    kwargs = dict(
        code_dim=sum(bits),
        factorized_bits=bits,
        factorized_num_layers=int(params["factorized_n_layer"]),
        num_positions=int(params["block_size"]),
        num_classes=int(params["class_num"]),
        hidden_size=dim,
        num_hidden_layers=int(params["spatial_n_layer"]),
        num_attention_heads=int(params["n_head"]),
        intermediate_size=_find_multiple(hidden, int(params["multiple_of"])),
        rms_norm_eps=float(params["norm_eps"]),
        rope_theta=float(params["rope_base"]),
        attention_dropout=float(params["attn_dropout_p"]),
        resid_dropout=float(params["resid_dropout_p"]),
        ffn_dropout=float(params["ffn_dropout_p"]),
        token_dropout=float(params["token_drop"]),
        class_dropout_prob=LABEL_DROPOUT,
        label_smoothing=0.0,
        prune_duplicates=False,
        merge_instruction=False,
        zero_start_rotary=True,
    )
    kwargs.update(overrides)
    return MergeARConfig(**kwargs)


def _block_weights(official: dict, prefix: str, ours: str, dim: int) -> dict:
    out = {}
    for key, value in official.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]  # "N.attention.wqkv.weight", ...
        if rest.endswith("attention.wqkv.weight"):
            head = rest[: -len("wqkv.weight")]
            q, k, v = value.split([dim, (value.shape[0] - dim) // 2, (value.shape[0] - dim) // 2])
            out.update(
                {f"{ours}{head}q_proj.weight": q, f"{ours}{head}k_proj.weight": k, f"{ours}{head}v_proj.weight": v}
            )
        elif rest.endswith("attention.wo.weight"):
            out[f"{ours}{rest[: -len('wo.weight')]}o_proj.weight"] = value
        else:
            out[ours + rest] = value
    return out


def stage2_weights(state_dict: dict[str, torch.Tensor], config: MergeARConfig) -> dict[str, torch.Tensor]:
    """Our parameter names from an official ``GPT`` state dict (bare, or ``transformer.*`` inside a
    Net2NetTransformer checkpoint; the first/cond stage models are left out)."""
    if any(k.startswith("transformer.") for k in state_dict):
        state_dict = {k[len("transformer.") :]: v for k, v in state_dict.items() if k.startswith("transformer.")}
    dim = config.hidden_size
    weights = {
        "tok_embeddings.0.weight": state_dict["pre_emb.weight"],
        "tok_embeddings.1.weight": state_dict["post_emb.weight"],
        "class_embedding.weight": state_dict["class_emb.embedding_table.weight"],
        "norm.weight": state_dict["norm.weight"],
        "heads.0.weight": state_dict["head.0.weight"],
        "heads.1.weight": state_dict["head.1.weight"],
    }
    weights.update(_block_weights(state_dict, "spatial_blocks.", "layers.", dim))
    weights.update(_block_weights(state_dict, "factorized_blocks.", "sub_token_layers.", dim))
    return weights


def convert_official_stage2_checkpoint(
    checkpoint: str | Path, config: str | Path, output_dir: str | Path | None = None, dtype=torch.float32
) -> MergeARForCausalLM:
    """Build a [`MergeARForCausalLM`] from an official stage-2 checkpoint + its YAML; save it if ``output_dir``."""
    with open(config) as f:
        params = stage2_params(yaml.safe_load(f))
    if params is None:
        raise ValueError(f"{config}: no model.init_args.transformer_config section; is this a stage-2 config?")
    cfg = stage2_config_from_params(params, where=str(config))
    try:
        weights = stage2_weights(load_official_state_dict(checkpoint), cfg)
    except KeyError as err:
        raise ValueError(f"{checkpoint}: official stage-2 weight {err} missing; is this a GPT checkpoint?") from None
    model = MergeARForCausalLM(cfg)
    expected = model.state_dict()
    weights["merge_embedding.weight"] = torch.zeros_like(expected["merge_embedding.weight"])  # unused: no K token
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: weights do not match the YAML: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
    model.eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model


__all__ = [
    "convert_official_stage2_checkpoint",
    "stage2_config_from_params",
    "stage2_params",
    "stage2_weights",
]
