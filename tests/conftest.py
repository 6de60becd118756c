"""Shared test helpers: tiny random models and the ../shared fixtures (present in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


def shared_fixture(*parts: str) -> Path:
    """Path under ../shared/fixtures; skip (with the reason) only where ../shared is absent (a user's clone)."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (a clone without the team's shared/ folder); CI has it")
    path = FIXTURES.joinpath(*parts)
    assert path.exists(), f"{path} is missing from ../shared/fixtures"
    return path


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def random_pixels(batch: int, resolution: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, resolution, resolution, generator=generator) * 2 - 1


@pytest.fixture
def tiny_tokenizer():
    from mergevq_hf import MergeVQConfig, MergeVQModel

    return MergeVQModel(MergeVQConfig.from_preset("tiny")).eval()


def run_without_mergevq_hf(script: str, cwd) -> None:
    """Run ``script`` in a fresh Python where importing ``mergevq_hf`` fails (as on a machine without the
    package), offline; it must print REMOTE_OK."""
    import subprocess
    import sys
    import textwrap

    code = 'import sys\nsys.modules["mergevq_hf"] = None  # importing mergevq_hf now raises ImportError\n'
    code += textwrap.dedent(script)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd), "HF_HOME": str(cwd) + "/hf"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd)
    assert "REMOTE_OK" in result.stdout, result.stderr[-3000:]
