"""Linear probing (A.4) of frozen tokenizer features on the local digits: the protocol's pieces, a trained
tokenizer beating a random one of the same config, and `mergevq eval probe` run by one and by two processes
giving the same accuracy."""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli_one_and_two_processes
from mergevq_hf import MergeVQModel
from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR
from mergevq_hf.evaluation.linear_probe import (
    LinearProbe,
    LinearProbeConfig,
    extract_features,
    tokenizer_features,
    train_linear_probe,
)
from mergevq_hf.training.data import DataConfig

PROBE = LinearProbeConfig(epochs=90, batch_size=256, lr=1e-3)


@pytest.fixture(scope="module")
def all_digits(tmp_path_factory):
    """All 1797 sklearn digits (32 px): 1612 train, 185 test."""
    from mergevq_hf.testing import build_local_dataset

    root = tmp_path_factory.mktemp("all_digits")
    build_local_dataset("digits", root, size=32, num_per_image=200, format="parquet", seed=0)
    return root


@pytest.fixture(scope="module")
def trained_tokenizer():
    return MergeVQModel.from_pretrained(DEFAULT_PIPELINE_DIR / "tokenizer").eval()


def _splits(tokenizer, root, feature):
    return [
        extract_features(tokenizer, DataConfig(dataset=str(root), split=split), feature=feature)
        for split in ("train", "test")
    ]


def test_features_kinds(trained_tokenizer):
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        encoded = trained_tokenizer.encode(pixels, num_tokens=16)
        cls = tokenizer_features(trained_tokenizer, pixels, "cls", num_tokens=16)
        tokens = tokenizer_features(trained_tokenizer, pixels, "tokens", num_tokens=16)
    torch.testing.assert_close(cls, encoded.cls_token)
    torch.testing.assert_close(tokens, encoded.quantized.mean(1))  # mean of the K = 16 +-1 codes
    assert tokens.shape == (3, trained_tokenizer.config.code_dim)
    with pytest.raises(ValueError, match=r"feature='avg'; allowed: \('cls', 'tokens'\)"):
        tokenizer_features(trained_tokenizer, pixels, "avg")


def test_probe_protocol_pieces():
    probe = LinearProbe(16, 5)
    assert [name for name, _ in probe.named_parameters()] == ["head.weight", "head.bias"]  # parameter-free BN
    assert not probe.norm.affine and probe.head.weight.std() < 0.02 and probe.head.bias.abs().max() == 0
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=generator) * 3
    labels = torch.arange(200) % 5
    train = {"features": centres[labels] + torch.randn(200, 16, generator=generator), "label": labels}
    evaluation = {"features": centres[labels[:50]] + torch.randn(50, 16, generator=generator), "label": labels[:50]}
    config = LinearProbeConfig(epochs=20, batch_size=32, lr=1e-2, warmup_epochs=2)
    probe, report = train_linear_probe(train, evaluation, config, show_progress=False)
    assert report["top1"] > 0.9 and report["top5"] == 1.0 and report["steps"] == 20 * 7
    _, again = train_linear_probe(train, evaluation, config, show_progress=False)
    assert again == report  # deterministic
    for bad, match in (
        (dict(epochs=0), "epochs must be an int >= 1"),
        (dict(lr=float("nan")), "lr must be a finite number"),
        (dict(warmup_epochs=20, epochs=20), r"warmup_epochs \(20\) must be < epochs"),
        (dict(epochs=1), r"warmup_epochs \(10\) must be < epochs \(1\)"),
    ):
        with pytest.raises(ValueError, match=match):
            LinearProbeConfig(**bad)
    with pytest.raises(ValueError, match="num_classes=3 but labels go up to 4"):
        train_linear_probe(train, evaluation, config, num_classes=3, show_progress=False)


def test_trained_tokenizer_beats_random_init(all_digits, trained_tokenizer):
    """The embedded digits tokenizer was trained without the alignment teacher, so its CLS state is not a
    representation (see the closing note); the mean of its K quantized tokens is, and beats a random tokenizer
    of the same config by a clear margin."""
    torch.manual_seed(0)
    random_tokenizer = MergeVQModel(trained_tokenizer.config).eval()
    reports = {}
    for name, tokenizer in (("trained", trained_tokenizer), ("random", random_tokenizer)):
        train, test = _splits(tokenizer, all_digits, "tokens")
        assert train["features"].shape == (1612, 8) and test["features"].shape == (185, 8)
        reports[name] = train_linear_probe(train, test, PROBE, show_progress=False)[1]
    assert reports["trained"]["top1"] > reports["random"]["top1"] + 0.06, reports
    assert reports["trained"]["top1"] > 0.25  # chance: 0.1


def test_cli_probe_two_processes_equal_one(digits, tmp_path):
    args = ["eval", "probe", "--dataset", str(digits), "--eval-split", "test", "--feature", "tokens"]
    args += ["--epochs", "30", "--probe-batch-size", "32", "--warmup-epochs", "3", "--batch-size", "16"]
    first, second = run_cli_one_and_two_processes(args, tmp_path)
    assert (first["processes"], second["processes"]) == (1, 2)
    for key in ("top1", "top5", "train_top1", "num_train", "num_eval", "steps"):
        assert first[key] == second[key], key
    assert first["final_loss"] == pytest.approx(second["final_loss"], rel=1e-4)
    assert first["num_train"] > 90 and first["num_eval"] >= 10
