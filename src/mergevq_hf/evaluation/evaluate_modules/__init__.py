"""The package's metrics as ``evaluate`` modules: one folder per metric holding a script of the same name (the
layout ``evaluate.load(path)`` reads), shipped as package data so that they load offline.

    from mergevq_hf.evaluation import load_metric
    load_metric("fid").compute(predictions=fake_features, reference_features=real_features)
"""

from __future__ import annotations

from pathlib import Path

EVALUATE_MODULES = ("fid", "precision_recall", "inception_score")


def evaluate_module_path(name: str) -> Path:
    """Folder of the package's ``evaluate`` module ``name`` (one of :data:`EVALUATE_MODULES`)."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"evaluate module {name!r}; allowed: {EVALUATE_MODULES}")
    return Path(__file__).parent / f"mergevq_{name}"


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of the package's own module ``name`` (``"fid"``, ``"precision_recall"``,
    ``"inception_score"``): a local script shipped in the package, so it loads offline (``kwargs`` go to
    ``evaluate.load``)."""
    import evaluate

    return evaluate.load(str(evaluate_module_path(name)), **kwargs)
