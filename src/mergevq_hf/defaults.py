"""The embedded default models: tiny digits tokenizer + MergeAR shipped inside the package (offline, CPU).

Trained here on the local sklearn-digits data (32x32, L=64, K=36); the commands that reproduce them are in
``model_cards/default_pipeline.md``.
"""

from __future__ import annotations

from pathlib import Path

from .models.tokenizer import MergeVQModel

DEFAULT_PIPELINE_DIR = Path(__file__).parent / "assets" / "default_pipeline"


def default_tokenizer() -> MergeVQModel:
    """The embedded default tokenizer (the default pipeline's ``tokenizer`` component)."""
    return MergeVQModel.from_pretrained(DEFAULT_PIPELINE_DIR / "tokenizer").eval()
