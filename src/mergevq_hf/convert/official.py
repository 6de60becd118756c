"""Convert an official MergeVQ release checkpoint (Lightning ``.ckpt`` or a ``.safetensors`` state dict,
plus its LightningCLI YAML) into a ``save_pretrained`` folder of [`MergeVQModel`].

Our parameter names equal the official ``encoder.*`` / ``decoder.*`` names, so conversion is: read the
YAML into a [`MergeVQConfig`], pick the EMA copy (``model_ema.<name without dots>``, what the official
evaluation uses) or the live weights, drop training-only entries (``loss.*``, ``dist_model.*``) and load
strictly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import yaml

from ..models.tokenizer import MergeVQConfig, MergeVQModel

logger = logging.getLogger(__name__)

EMA_PREFIX = "model_ema."
TOKENIZER_PREFIXES = ("encoder.", "decoder.")


def _model_section(raw: dict) -> dict:
    """init_args of the MergeVQModel in a LightningCLI YAML (``model.init_args``) or a bare dict."""
    model = raw.get("model", raw)
    if "init_args" in model:
        return model["init_args"]
    return model.get("params", model)


def config_from_official_yaml(path: str | Path, **overrides) -> MergeVQConfig:
    """Read an official LightningCLI config (``model.init_args.ddconfig`` ...) into a MergeVQConfig."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    args = _model_section(raw)
    if "ddconfig" not in args:
        raise ValueError(
            f"{path}: no model.init_args.ddconfig (tokenizer) or model.init_args.transformer_config (stage-2 "
            "generator) section; is this an official MergeVQ config?"
        )
    dd = args["ddconfig"]
    num_res_blocks = dd.get("num_res_blocks", 2)
    if isinstance(num_res_blocks, list):
        if len(set(num_res_blocks)) != 1:
            raise ValueError(f"{path}: per-level num_res_blocks {num_res_blocks} is not supported")
        num_res_blocks = num_res_blocks[0]
    dist_head = dd.get("dist_head")
    if dist_head in (None, False):
        dist_head = None
    elif dist_head != "layer3":
        dist_head = "layer2"  # official: any other truthy value builds Linear-GELU-LN-Linear
    isotropic = dd.get("isotropic", False)
    ch, ch_mult = dd["ch"], list(dd.get("ch_mult", [1, 2, 4, 8]))
    width = int(isotropic) if isotropic and int(isotropic) > 1 else ch * ch_mult[-1]
    resolution = dd.get("resolution", 256)
    num_positions = (resolution // 2 ** (len(ch_mult) - 1)) ** 2
    code_dim = args.get("embed_dim", dd.get("z_channels", 18))
    if args.get("n_embed", 2**code_dim) != 2**code_dim:
        raise ValueError(f"{path}: n_embed={args['n_embed']} is not 2**embed_dim={2**code_dim} (LFQ)")
    loss = (args.get("lossconfig") or {}).get("params", {}) or (args.get("lossconfig") or {}).get("init_args", {})
    kwargs = dict(
        encoder_type="patch" if isotropic else "hybrid",
        in_channels=dd.get("in_channels", 3),
        out_channels=dd.get("out_ch", 3),
        resolution=resolution,
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        decoder_extra_res_blocks=dd.get("num_res_extra", 1),
        num_att_blocks=dd.get("num_att_blocks", 12),
        num_heads=dd.get("num_heads", 8),
        head_dim=dd.get("head_dim"),
        patch_embed_dim=width if isotropic else 768,
        drop_path_rate=float(dd.get("drop_path", 0.0)),
        code_dim=code_dim,
        dist_head=dist_head,
        dist_head_dim=dd.get("num_classes") or width,
        num_tokens=num_positions - (dd.get("merge_num") or 0),
        sample_entropy_weight=args.get("sample_minimization_weight", 1.0),
        codebook_entropy_weight=args.get("batch_maximization_weight", 1.0),
        commitment_weight=loss.get("commit_weight", 0.25),
        entropy_weight=loss.get("codebook_weight", 0.1),
    )
    kwargs.update(overrides)
    return MergeVQConfig(**kwargs)


def load_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Flat state dict from a Lightning ``.ckpt`` (``state_dict`` entry) or a ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a Lightning checkpoint or a state dict, got {type(checkpoint).__name__}")
    return checkpoint


def select_tokenizer_weights(state_dict: dict[str, torch.Tensor], names: list[str], use_ema: bool = True) -> dict:
    """The ``names`` (our = official parameter names) taken from the EMA copy or the live weights."""
    selected, missing = {}, []
    for name in names:
        key = EMA_PREFIX + name.replace(".", "") if use_ema else name
        if key in state_dict:
            selected[name] = state_dict[key]
        else:
            missing.append(key)
    if missing:
        hint = " (the checkpoint has no EMA copy of them: pass use_ema=False / --no-ema)" if use_ema else ""
        raise ValueError(f"{len(missing)} tokenizer weights missing from the checkpoint{hint}, e.g. {missing[:5]}")
    return selected


def convert_official_checkpoint(
    checkpoint: str | Path,
    config: str | Path,
    output_dir: str | Path | None = None,
    use_ema: bool = True,
    dtype: torch.dtype = torch.float32,
) -> MergeVQModel:
    """Build a [`MergeVQModel`] from an official checkpoint + YAML; save it to ``output_dir`` if given."""
    cfg = config_from_official_yaml(config)
    state_dict = load_official_state_dict(checkpoint)
    model = MergeVQModel(cfg)
    names = list(model.state_dict().keys())
    weights = select_tokenizer_weights(state_dict, names, use_ema=use_ema)
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
    skipped = sorted({k.split(".")[0] for k in state_dict if not k.startswith(TOKENIZER_PREFIXES + (EMA_PREFIX,))})
    if skipped:
        logger.info("not converted (training-only or other modules): %s", ", ".join(skipped))
    model.eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model
