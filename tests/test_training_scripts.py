"""End-to-end runs of the examples on local real data: code extraction, MergeAR and tokenizer training,
checkpoint + exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import EXAMPLES, load_example
from mergevq_hf import MergeVQModel
from mergevq_hf.cli import main as cli_main
from mergevq_hf.training.codes import load_codes
from mergevq_hf.training.data import DataConfig, make_dataloader


def test_extracted_codes_match_the_tokenizer(codes_dir, digits, tokenizer_dir):
    codes = load_codes(codes_dir)
    config = DataConfig(
        dataset=str(digits), crop="center", random_flip=False, alignment_views=False, shuffle=False, resolution=32
    )
    batches = list(make_dataloader(config, batch_size=16))
    assert len(codes) == sum(len(b["label"]) for b in batches)
    assert set(codes.column_names) >= {"codes", "tokens", "positions", "source", "num_tokens", "label"}
    assert set([int(k) for k in codes["num_tokens"]]) <= {16, 25, 36}
    assert len(set([int(k) for k in codes["num_tokens"]])) > 1, "K is sampled per example"
    tokenizer = MergeVQModel.from_pretrained(tokenizer_dir).eval()
    batch = batches[0]
    for i in range(4):
        k = int(codes[i]["num_tokens"])
        with torch.no_grad():
            enc = tokenizer.encode(batch["pixel_values"][i : i + 1], num_tokens=k)
        assert torch.equal(tokenizer.unmerge(enc.indices, enc.source)[0], codes[i]["codes"])
        assert int(codes[i]["label"]) == int(batch["label"][i])
        row = codes[i]
        assert torch.equal(row["tokens"], enc.indices[0]) and torch.equal(row["source"], enc.source[0])
        assert torch.equal(tokenizer.unmerge(row["tokens"][None], row["source"][None])[0], row["codes"])
        # positions: the first raster position of each token's group (brute force)
        first = [min(p for p in range(64) if int(row["source"][p]) == t) for t in range(k)]
        assert row["positions"].tolist() == first


@pytest.mark.parametrize("arch", ["mergear", "random-ar"])
def test_train_generator_resumes_exactly(arch, codes_dir, tmp_path):
    train = load_example("train_generator").main
    common = [
        "--codes",
        str(codes_dir),
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--save-every",
        "3",
        "--log-every",
        "1",
        "--config-overrides",
        '{"num_classes": 10}',
        "--arch",
        arch,
    ]
    train([*common, "--output-dir", str(tmp_path / "straight"), "--max-steps", "6"])
    train([*common, "--output-dir", str(tmp_path / "resumed"), "--max-steps", "3"])
    train([*common, "--output-dir", str(tmp_path / "resumed"), "--max-steps", "6", "--resume", "latest"])
    a = load_file(tmp_path / "straight/final/model.safetensors")
    b = load_file(tmp_path / "resumed/final/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = load_file(tmp_path / "resumed/checkpoints/step-3/model.safetensors")
    assert not all(torch.equal(a[k], fresh[k]) for k in a), "training moved the weights"
    assert (tmp_path / "straight/final/README.md").read_text().count("mergevq_hf") >= 1
    lines = (tmp_path / "straight/metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A random tiny DINOv2 saved locally: the alignment path runs offline exactly as with facebook/dinov2-base."""
    from transformers import Dinov2Config, Dinov2Model

    path = tmp_path_factory.mktemp("teacher")
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=56, patch_size=14
    )
    Dinov2Model(config).save_pretrained(path)
    return path


def test_train_tokenizer_resumes_exactly(digits, tiny_teacher, tmp_path, monkeypatch):
    """Full stage-1 loss (L1, LPIPS, GAN + LeCam, LFQ, alignment with a teacher, source recovery): an interrupted
    and resumed run ends bit-identical to an uninterrupted one, with the same metrics.jsonl steps. The interrupted
    run got to step 3 and its newest checkpoint (step-3) lost half its weights file: ``--resume latest`` warns,
    takes step-2, drops the step-3 metrics row and never calls torch.load without weights_only=True."""
    from mergevq_hf.training.checkpoint import CheckpointWarning

    train = load_example("train_tokenizer").main
    common = [
        *("--dataset", str(digits), "--preset", "tiny", "--batch-size", "8", "--save-every", "2"),
        *("--eval-every", "100", "--merge-sampler", "exponential", "--merge-base", "6", "--merge-direction", "-1"),
        *("--shuffle-buffer", "32", "--teacher", str(tiny_teacher), "--log-every", "1"),
    ]
    train([*common, "--output-dir", str(tmp_path / "straight"), "--max-steps", "4"])
    train([*common, "--output-dir", str(tmp_path / "resumed"), "--max-steps", "3"])
    weights = tmp_path / "resumed/checkpoints/step-3/model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    real_load = torch.load

    def guarded_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, f"torch.load without weights_only=True: {args}"
        return real_load(*args, **kwargs)

    with monkeypatch.context() as patch, pytest.warns(CheckpointWarning, match="skipping .*step-3: model.safetensors"):
        patch.setattr(torch, "load", guarded_load)
        train([*common, "--output-dir", str(tmp_path / "resumed"), "--max-steps", "4", "--resume", "latest"])
    for name in ("model.safetensors", "source_recovery/model.safetensors"):
        a = load_file(tmp_path / "straight/final" / name)
        b = load_file(tmp_path / "resumed/final" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    logged = [json.loads(line) for line in (tmp_path / "straight/metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in logged if "total" in row]
    assert len(train_rows) == 4
    assert all(row["alignment"] > 0 and row["source"] > 0 and row["perceptual"] > 0 for row in train_rows)
    resumed = [json.loads(line) for line in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in resumed] == [row["step"] for row in logged] == [1, 2, 3, 4]
    # the damaged step-3 was removed by the retention pass of the next save
    assert sorted(p.name for p in (tmp_path / "resumed/checkpoints").iterdir()) == ["step-2", "step-4"]


def test_training_survives_a_messy_stream(tmp_path):
    """A truncated file, a grayscale and a CMYK image in the stream: training goes on, the bad file is skipped
    and counted in metrics.jsonl, the others are converted and counted."""
    import io

    import numpy as np
    from PIL import Image

    folder, other = tmp_path / "messy" / "train" / "000_things", tmp_path / "messy" / "train" / "001_stuff"
    folder.mkdir(parents=True)
    other.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save((folder, other)[i % 2] / f"rgb{i}.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    train = load_example("train_tokenizer").main
    train(
        [
            "--dataset",
            str(tmp_path / "messy"),
            "--preset",
            "tiny",
            "--batch-size",
            "7",
            "--max-steps",
            "1",
            "--log-every",
            "1",
            "--eval-split",
            "",
            "--shuffle-buffer",
            "8",
            "--teacher",
            "",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    logged = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    assert logged["data_skipped_corrupt"] == 1
    assert logged["data_converted"] == {"L": 1, "CMYK": 1}
    assert (tmp_path / "run/final/model.safetensors").exists()


def test_two_process_gloo_training_resumes_exactly(digits, tmp_path):
    """Two CPU processes (gloo) through ``accelerate launch``: interrupted + resumed == uninterrupted."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script = str(EXAMPLES / "train_tokenizer.py")
    common = [
        *("--dataset", str(digits), "--preset", "tiny", "--batch-size", "4", "--save-every", "2"),
        *("--eval-split", "", "--teacher", "", "--log-every", "1", "--shuffle-buffer", "16"),
    ]
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
    ]

    def run(*extra):
        result = subprocess.run([*launch, script, *common, *extra], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-4000:]

    run("--output-dir", str(tmp_path / "straight"), "--max-steps", "4")
    run("--output-dir", str(tmp_path / "resumed"), "--max-steps", "2")
    run("--output-dir", str(tmp_path / "resumed"), "--max-steps", "4", "--resume", "latest")
    for name in ("model.safetensors", "source_recovery/model.safetensors"):
        a = load_file(tmp_path / "straight/final" / name)
        b = load_file(tmp_path / "resumed/final" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # both processes saved their RNG state (safetensors, no pickle): it really ran with 2 processes
    checkpoint = tmp_path / "straight/checkpoints/step-4"
    assert sorted(p.name for p in checkpoint.glob("rng_state_*")) == [
        "rng_state_0.safetensors",
        "rng_state_1.safetensors",
    ]
    assert not list(checkpoint.glob("*.pkl"))
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors"} <= set(
        json.loads((checkpoint / "COMPLETE").read_text())["files"]
    )


def test_fine_tune_default_models_on_an_imagefolder(tmp_path):
    """The fine-tuning path of both examples: start from the embedded default pipeline's tokenizer and
    generator (``--init-from``) on a user's own imagefolder (class subfolders), a few steps each."""
    import numpy as np
    from PIL import Image

    from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        folder = tmp_path / "mine" / "train" / label
        folder.mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    tok_out, ar_out = tmp_path / "tok", tmp_path / "ar"
    load_example("train_tokenizer").main(
        [
            *("--dataset", str(tmp_path / "mine"), "--init-from", str(DEFAULT_PIPELINE_DIR / "tokenizer")),
            *(
                "--output-dir",
                str(tok_out),
                "--max-steps",
                "2",
                "--batch-size",
                "4",
                "--eval-split",
                "",
                "--teacher",
                "",
            ),
        ]
    )
    before = load_file(DEFAULT_PIPELINE_DIR / "tokenizer/model.safetensors")
    after = load_file(tok_out / "final/model.safetensors")
    assert before.keys() == after.keys() and not all(torch.equal(before[k], after[k]) for k in before)
    assert (
        cli_main(
            [
                "extract-codes",
                "--tokenizer",
                str(tok_out / "final"),
                "--dataset",
                str(tmp_path / "mine"),
                "--output",
                str(tmp_path / "codes"),
                "--base",
                "6",
            ]
        )
        == 0
    )
    load_example("train_generator").main(
        [
            *("--codes", str(tmp_path / "codes"), "--init-from", str(DEFAULT_PIPELINE_DIR / "transformer")),
            *("--output-dir", str(ar_out), "--max-steps", "2", "--batch-size", "4"),
        ]
    )
    generator = load_file(ar_out / "final/model.safetensors")
    assert generator.keys() == load_file(DEFAULT_PIPELINE_DIR / "transformer/model.safetensors").keys()


def test_decoder_fine_tuning_keeps_the_codes(digits, tokenizer_dir, tmp_path):
    """``--trainable decoder``: only decoder weights move, so the fine-tuned tokenizer gives the same codes as the
    one it started from (generators trained on them stay valid) while its reconstructions change; without
    ``--init-from`` it is a one-line usage error."""
    out = tmp_path / "ft"
    train = load_example("train_tokenizer").main
    common = ["--dataset", str(digits), "--eval-split", "", "--teacher", "", "--batch-size", "4"]
    train(
        [
            *common,
            *("--init-from", str(tokenizer_dir), "--trainable", "decoder", "--no-augment", "--no-source-recovery"),
            *("--output-dir", str(out), "--max-steps", "3", "--lr", "1e-3", "--ema-decay", "0"),
        ]
    )
    before = load_file(tokenizer_dir / "model.safetensors")
    after = load_file(out / "final/model.safetensors")
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("decoder.") for k in moved)
    assert not (out / "final/source_recovery").exists()
    old, new = MergeVQModel.from_pretrained(tokenizer_dir).eval(), MergeVQModel.from_pretrained(out / "final").eval()
    config = DataConfig(
        dataset=str(digits), crop="center", random_flip=False, alignment_views=False, shuffle=False, resolution=32
    )
    pixels = next(iter(make_dataloader(config, batch_size=8)))
    with torch.no_grad():
        a, b = old.encode(pixels["pixel_values"], num_tokens=36), new.encode(pixels["pixel_values"], num_tokens=36)
        assert torch.equal(a.indices, b.indices) and torch.equal(a.source, b.source)
        codes = old.unmerge(a.indices, a.source)
        assert not torch.allclose(old.decode(codes), new.decode(codes))
    with pytest.raises(SystemExit) as error:
        train([*common, "--trainable", "decoder", "--output-dir", str(tmp_path / "bad")])
    assert error.value.code == 2


def test_train_source_recovery_learns_and_fine_tunes_with_a_generator(codes_dir, tokenizer_dir, tmp_path):
    """Standalone source recovery on a frozen tokenizer's codes (tokens shuffled, positions given), then the A.1
    fine-tune on a random-order generator's teacher-forced codes; held-out accuracy is logged."""
    import shutil

    codes = tmp_path / "codes"
    shutil.copytree(codes_dir, codes)
    shutil.copy(codes / "train-00000.parquet", codes / "test-00000.parquet")  # a held-out split to score
    train = load_example("train_source_recovery").main
    common = ["--codes", str(codes), "--tokenizer", str(tokenizer_dir), "--batch-size", "16", "--log-every", "1"]
    small = ["--config-overrides", '{"dim": 32, "num_heads": 2}', "--lr", "3e-3", "--eval-every", "25"]
    train([*common, *small, "--output-dir", str(tmp_path / "rec"), "--max-steps", "50"])
    rows = [json.loads(line) for line in (tmp_path / "rec/metrics.jsonl").read_text().splitlines()]
    accuracy = [r["heldout_position_accuracy"] for r in rows if "heldout_position_accuracy" in r]
    # chance is about 1/K (K = 16..36); measured 0.21 after 25 steps, 0.26 after 50
    assert len(accuracy) == 2 and accuracy[1] > max(0.15, accuracy[0] + 0.02), accuracy
    generator = tmp_path / "gen"
    load_example("train_generator").main(
        [
            *("--codes", str(codes), "--arch", "random-ar", "--preset", "tiny", "--batch-size", "8"),
            *("--config-overrides", '{"num_classes": 10}', "--output-dir", str(generator), "--max-steps", "2"),
        ]
    )
    assert load_file(generator / "final/model.safetensors")["position_counts"].sum() > 0, "prior counted"
    train(
        [
            *common,
            *("--init-from", str(tmp_path / "rec/final"), "--generator", str(generator / "final")),
            *("--output-dir", str(tmp_path / "ft"), "--max-steps", "3", "--eval-every", "3"),
        ]
    )
    a, b = load_file(tmp_path / "rec/final/model.safetensors"), load_file(tmp_path / "ft/final/model.safetensors")
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)
