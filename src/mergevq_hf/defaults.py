"""The embedded default models the README's first command and ``from_pretrained()`` with no id use."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .models.tokenizer import MergeVQConfig, MergeVQModel

logger = logging.getLogger(__name__)

DEFAULT_TOKENIZER_DIR = Path(__file__).parent / "assets" / "default_tokenizer"
# Until a trained default ships, the default is a seeded random-weight model of this preset.
FALLBACK_PRESET = "tiny"


def default_tokenizer() -> MergeVQModel:
    """The packaged tokenizer checkpoint, or (when none is packaged) a seeded random-weight tiny one."""
    if (DEFAULT_TOKENIZER_DIR / "config.json").exists():
        return MergeVQModel.from_pretrained(DEFAULT_TOKENIZER_DIR).eval()
    logger.warning(
        "no trained default tokenizer is packaged yet: using a seeded random-weight %r model", FALLBACK_PRESET
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return MergeVQModel(MergeVQConfig.from_preset(FALLBACK_PRESET)).eval()
