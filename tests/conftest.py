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


# ------------------------------------------------------------------ examples and the local data they train on
EXAMPLES = REPO / "examples"


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module (its ``main(argv)`` runs the script in-process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """Local real data: sklearn's handwritten digits as a parquet dataset (32 px, 12 crops per image)."""
    from mergevq_hf.testing import build_local_dataset

    root = tmp_path_factory.mktemp("digits")
    build_local_dataset("digits", root, size=32, num_per_image=12, format="parquet", seed=0)
    return root


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from mergevq_hf import MergeVQConfig, MergeVQModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tok")
    MergeVQModel(MergeVQConfig.from_preset("tiny")).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def codes_dir(digits, tokenizer_dir, tmp_path_factory):
    """Code maps of ``digits`` by the tiny tokenizer (``mergevq extract-codes``, K sampled per example)."""
    from mergevq_hf.cli import main as cli_main

    out = tmp_path_factory.mktemp("codes")
    argv = ["extract-codes", "--tokenizer", str(tokenizer_dir), "--dataset", str(digits), "--output", str(out)]
    argv += ["--sampler", "gaussian", "--base", "5", "--num-candidates", "3", "--batch-size", "16"]
    assert cli_main(argv) == 0
    return out


def run_cli_one_and_two_processes(args: list[str], tmp_path) -> tuple[dict, dict]:
    """``mergevq <args>`` as one process, then under ``accelerate launch`` as two CPU processes (gloo); the JSON
    results (``--output-json``) of both runs."""
    import json
    import os
    import subprocess
    import sys

    launch2 = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    results = []
    for prefix, name in (([sys.executable], "one.json"), (launch2, "two.json")):
        command = [*prefix, "-m", "mergevq_hf.cli", *args, "--output-json", str(tmp_path / name)]
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        results.append(json.loads((tmp_path / name).read_text()))
    return results[0], results[1]
