from pathlib import Path

import yaml

from .official import config_from_official_yaml, convert_official_checkpoint, load_official_state_dict
from .official_stage2 import convert_official_stage2_checkpoint, stage2_params


def convert_official(checkpoint, config, output_dir=None, use_ema: bool = True):
    """Tokenizer or stage-2 generator, as the official YAML says (``transformer_config`` = stage 2)."""
    with open(Path(config)) as f:
        raw = yaml.safe_load(f)
    if isinstance(raw, dict) and stage2_params(raw) is not None:
        return convert_official_stage2_checkpoint(checkpoint, config, output_dir)
    return convert_official_checkpoint(checkpoint, config, output_dir, use_ema=use_ema)


__all__ = [
    "config_from_official_yaml",
    "convert_official",
    "convert_official_checkpoint",
    "convert_official_stage2_checkpoint",
    "load_official_state_dict",
]
