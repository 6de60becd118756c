"""The embedded default models shipped inside the package (offline, CPU), trained here on local real data:

* ``default_pipeline``: tiny digits tokenizer + MergeAR (32x32, L=64, K=36), for generation;
* ``default_random_ar_pipeline``: the same tokenizer + a random-order generator + source recovery, trained on
  the same digits codes;
* ``default_tokenizer``: a tiny tokenizer trained on scikit-image photo crops, for reconstruction.

The commands that reproduce them are in ``model_cards/default_pipeline.md``.
"""

from __future__ import annotations

from pathlib import Path

from .models.tokenizer import MergeVQModel

DEFAULT_PIPELINE_DIR = Path(__file__).parent / "assets" / "default_pipeline"
DEFAULT_RANDOM_AR_PIPELINE_DIR = Path(__file__).parent / "assets" / "default_random_ar_pipeline"
DEFAULT_TOKENIZER_DIR = Path(__file__).parent / "assets" / "default_tokenizer"
DEFAULT_PIPELINES = {"mergear": DEFAULT_PIPELINE_DIR, "random-ar": DEFAULT_RANDOM_AR_PIPELINE_DIR}


def default_tokenizer() -> MergeVQModel:
    """The embedded reconstruction tokenizer (photo crops, 32x32)."""
    return MergeVQModel.from_pretrained(DEFAULT_TOKENIZER_DIR).eval()
