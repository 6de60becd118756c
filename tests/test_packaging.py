"""What a non-editable install ships: every embedded asset is named by setup.cfg's package_data (a wheel without
them has no default pipeline), and the declared lower bounds are the versions CI pins in its minimum environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
setupcfg = pytest.importorskip("setuptools.config.setupcfg", reason="setuptools reads setup.cfg")
CONFIG = setupcfg.read_configuration(ROOT / "setup.cfg")


def test_every_embedded_asset_is_package_data():
    package = ROOT / "src/mergevq_hf"
    globs = CONFIG["options"]["package_data"]["mergevq_hf"]
    shipped = {path for pattern in globs for path in package.glob(pattern) if path.is_file()}
    assets = {path for path in (package / "assets").rglob("*") if path.is_file() and "__pycache__" not in path.parts}
    assert assets, "no assets found"
    missing = sorted(str(path.relative_to(package)) for path in assets - shipped)
    assert not missing, f"not in setup.cfg package_data (a wheel would lack them): {missing}"
    # the loaders need these: a pipeline folder is model_index.json + pipeline_mergevq.py + component folders
    names = {str(path.relative_to(package)) for path in shipped}
    for folder in ("default_pipeline", "default_random_ar_pipeline"):
        assert {f"assets/{folder}/model_index.json", f"assets/{folder}/pipeline_mergevq.py"} <= names


def test_evaluate_modules_are_package_data():
    package = ROOT / "src/mergevq_hf"
    globs = CONFIG["options"]["package_data"]["mergevq_hf"]
    shipped = {path for pattern in globs for path in package.glob(pattern) if path.is_file()}
    from mergevq_hf.evaluation import EVALUATE_MODULES, evaluate_module_path

    for name in EVALUATE_MODULES:
        script = evaluate_module_path(name) / f"mergevq_{name}.py"
        assert script in shipped, f"{script} is not package data (evaluate could not load it from a wheel)"


def test_lower_bounds_are_the_pinned_minimum_versions():
    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = {}
    for line in (ROOT / ".ci/constraints-min.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    for text in CONFIG["options"]["install_requires"] + CONFIG["options"]["extras_require"]["vision"]:
        requirement = Requirement(text)
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        name = requirement.name.lower().replace("_", "-")
        assert lower, f"{text}: no lower bound"
        assert name in pins, f"{name} has no pin in .ci/constraints-min.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"
        assert Version(pins[name]) == Version(lower[0]), (
            f"{name}: setup.cfg says >={lower[0]}, .ci/constraints-min.txt pins {pins[name]}"
        )


def test_timm_is_needed_only_by_the_features_that_use_it(monkeypatch):
    """timm (and with it torchvision) is the [vision] extra: the package imports and the embedded pipeline
    generates without importing it, and the features that need it fail with one clear error when it is absent."""
    assert not any(text.startswith(("timm", "torchvision")) for text in CONFIG["options"]["install_requires"])
    script = textwrap.dedent(
        """
        import sys
        import torch
        from mergevq_hf import MergeVQPipeline
        import mergevq_hf.cli, mergevq_hf.evaluation.linear_probe, mergevq_hf.training.data
        pipe = MergeVQPipeline.from_pretrained()
        pipe.set_progress_bar_config(disable=True)
        image = pipe(class_labels=[3], generator=[torch.Generator().manual_seed(0)], output_type="pt").images
        assert image.shape[0] == 1 and "timm" not in sys.modules, sorted(m for m in sys.modules if "timm" in m)
        print("CORE_OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "CORE_OK" in result.stdout, result.stderr[-2000:]

    from mergevq_hf.evaluation.linear_probe import train_linear_probe
    from mergevq_hf.optional import MissingDependencyError

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    rows = {"features": torch.zeros(4, 2), "label": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(
        MissingDependencyError, match=r"the linear probe needs timm: pip install 'mergevq_hf\[vision\]'"
    ):
        train_linear_probe(rows, rows, num_classes=2)
    assert issubclass(MissingDependencyError, ImportError)
