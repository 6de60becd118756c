"""Model folders load as Hub remote code, so a few building blocks are copied between them instead of imported.
Every copy is marked ``# Copied from mergevq_hf.models.<folder>.<module>.<Name>`` (optionally ``with A->B``, the
renaming applied to the original, as in transformers) and must stay identical to its original."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import mergevq_hf.models

MODELS = Path(mergevq_hf.models.__file__).parent
MARKER = re.compile(
    r"^# Copied from (mergevq_hf\.models\.[\w.]+)\.(\w+)(?: with (\w+)->(\w+))?\n(?:class|def) (\w+)", re.M
)


def _copies():
    for path in sorted(MODELS.glob("*/*.py")):
        module = f"mergevq_hf.models.{path.parent.name}.{path.stem}"
        for match in MARKER.finditer(path.read_text()):
            yield pytest.param(module, *match.groups(), id=f"{path.parent.name}.{match.group(5)}")


COPIES = list(_copies())


def test_the_known_copies_are_marked():
    names = {param.id for param in COPIES}
    expected = {"random_ar.RMSNorm", "random_ar.apply_rotary", "random_ar.SwiGLU"}
    expected |= {"random_ar.sub_token_pass", "random_ar.FactorizedHeadsMixin"}
    expected |= {"source_recovery.DropPath", "source_recovery.Mlp"}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("module, original_module, original_name, old, new, name", COPIES)
def test_copies_stay_identical(module, original_module, original_name, old, new, name):
    copy = inspect.getsource(getattr(importlib.import_module(module), name))
    original = inspect.getsource(getattr(importlib.import_module(original_module), original_name))
    if old:
        original = original.replace(old, new)
    assert copy == original, f"{module}.{name} drifted from {original_module}.{original_name}"
