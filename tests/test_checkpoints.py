"""Checkpoints that resume whatever the disk did: completeness marker + fallback, a clear full-disk error with no
leftovers, no full unpickling on resume, only trainable state in the tokenizer's checkpoints, and a metrics.jsonl
that reads as one run after a resume."""

from __future__ import annotations

import errno
import json
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from conftest import load_example
from mergevq_hf.training import checkpoint as trainer_checkpoint
from mergevq_hf.training.checkpoint import (
    CheckpointWarning,
    ModuleStateSubset,
    TrainingState,
    checkpoint_problem,
    register_for_checkpointing,
    resume_from,
    save_checkpoint,
)
from mergevq_hf.training.ema import EMAModel
from mergevq_hf.training.metrics_log import MetricsLogger


# ---------------------------------------------------------------------------------------------- a tiny trainer
class Loss(torch.nn.Module):
    """Stands in for MergeVQLoss: a trainable part, a mutable buffer and a frozen network."""

    def __init__(self):
        super().__init__()
        self.discriminator = torch.nn.Linear(3, 1)
        self.stats = torch.nn.Module()
        self.stats.register_buffer("ema", torch.zeros(()))
        self.frozen = torch.nn.Linear(3, 3).requires_grad_(False)


def _trainer():
    accelerator = Accelerator()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    loss = Loss()
    state, ema = TrainingState(), EMAModel(accelerator.unwrap_model(model), decay=0.9)
    register_for_checkpointing(
        accelerator, training=state, ema=ema, gan=ModuleStateSubset(loss, "discriminator", "stats")
    )
    return accelerator, model, optimizer, state, ema, loss


def _train(trainer, output, steps, save=True):
    accelerator, model, optimizer, state, ema, loss = trainer
    for _ in range(steps):
        out = model(torch.randn(2, 4, device=accelerator.device))
        value = out.pow(2).mean() * random.random() * float(np.random.rand())
        accelerator.backward(value)
        optimizer.step()
        optimizer.zero_grad()
        ema.update(accelerator.unwrap_model(model))
        loss.stats.ema.add_(1.0)
        state.step += 1
        if save:
            save_checkpoint(accelerator, output, state.step, total_limit=None)


def _weights(trainer):
    return {k: v.detach().cpu().clone() for k, v in trainer[0].unwrap_model(trainer[1]).state_dict().items()}


def _draws():
    return torch.rand(3), random.random(), float(np.random.rand())


def test_checkpoint_files_and_exact_state(tmp_path):
    """Every piece round-trips (weights, optimizer, counters, EMA, discriminator + buffer, all RNGs), a checkpoint
    has no pickle but accelerate's weights_only optimizer file, and the frozen network is not saved."""
    loss = Loss()
    loss.frozen.requires_grad_(True)
    with pytest.raises(ValueError, match="trainable parameters outside"):
        ModuleStateSubset(loss, "discriminator", "stats")  # a trainable part would be silently dropped
    trainer = _trainer()
    _train(trainer, tmp_path, 2)
    files = sorted(p.name for p in (tmp_path / "checkpoints/step-2").iterdir())
    assert files == [
        "COMPLETE",
        "model.safetensors",
        "optimizer.bin",
        "rng_state_0.safetensors",
        "state_ema.safetensors",
        "state_gan.safetensors",
        "state_training.safetensors",
    ]
    assert sorted(load_file(tmp_path / "checkpoints/step-2/state_gan.safetensors")) == [
        "discriminator/bias",
        "discriminator/weight",
        "stats/ema",
    ]
    manifest = json.loads((tmp_path / "checkpoints/step-2/COMPLETE").read_text())
    assert manifest["step"] == 2 and set(manifest["files"]) == set(files) - {"COMPLETE"}
    weights, ema = _weights(trainer), {k: v.clone() for k, v in trainer[4].shadow.state_dict().items()}
    after = _draws()
    _train(trainer, tmp_path, 1, save=False)
    continued = _weights(trainer)

    fresh = _trainer()
    assert resume_from(fresh[0], tmp_path, "latest") == tmp_path / "checkpoints/step-2"
    assert fresh[3].state_dict() == {"step": 2, "epoch": 0, "step_in_epoch": 0, "bad_steps": 0}
    assert fresh[4].num_updates == 2 and fresh[4].decay == 0.9
    assert all(torch.equal(v, fresh[4].shadow.state_dict()[k]) for k, v in ema.items())
    assert float(fresh[5].stats.ema) == 2.0
    assert all(torch.equal(v, _weights(fresh)[k]) for k, v in weights.items())
    draws = _draws()
    assert torch.equal(draws[0], after[0]) and draws[1:] == after[1:], "RNG states restored"
    # the next step from the restored RNGs + optimizer: bit-identical to the uninterrupted one
    _train(fresh, tmp_path, 1, save=False)
    assert all(torch.equal(v, _weights(fresh)[k]) for k, v in continued.items())


def _damage(path: Path, how: str) -> None:
    if how == "empty":
        for file in path.iterdir():
            file.unlink()
    elif how == "truncated":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "no_marker":
        (path / "COMPLETE").unlink()
    elif how == "corrupt":  # same size, so the marker check passes: loading fails instead
        file = path / "model.safetensors"
        data = bytearray(file.read_bytes())
        data[8:40] = b"\xff" * 32
        file.write_bytes(bytes(data))


def test_resume_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    trainer = _trainer()
    _train(trainer, tmp_path, 5)
    step1 = load_file(tmp_path / "checkpoints/step-1/model.safetensors")
    root = tmp_path / "checkpoints"
    (root / "step-6").mkdir()  # an empty folder (e.g. a copy that never happened)
    _damage(root / "step-5", "empty")
    _damage(root / "step-4", "truncated")
    _damage(root / "step-3", "no_marker")
    _damage(root / "step-2", "corrupt")
    assert checkpoint_problem(root / "step-4") and checkpoint_problem(root / "step-3")
    assert checkpoint_problem(root / "step-2") is None
    fresh = _trainer()
    with pytest.warns(CheckpointWarning) as record:
        assert resume_from(fresh[0], tmp_path, "latest") == root / "step-1"
    messages = [str(w.message) for w in record if issubclass(w.category, CheckpointWarning)]
    assert len(messages) == 5, messages
    for name, words in [
        ("step-6", "no COMPLETE marker"),
        ("step-5", "no COMPLETE marker"),
        ("step-4", "model.safetensors has"),
        ("step-3", "no COMPLETE marker"),
        ("step-2", "could not load"),
    ]:
        assert any(name in m and words in m for m in messages), (name, messages)
    assert fresh[3].step == 1
    restored = _weights(fresh)
    assert all(torch.equal(restored[k], v) for k, v in step1.items())
    # an explicit folder that is incomplete: a clear ValueError
    with pytest.raises(ValueError, match="step-4.*not a complete checkpoint.*model.safetensors has"):
        resume_from(_trainer()[0], tmp_path, str(root / "step-4"))
    with pytest.raises(ValueError, match="could not be loaded"):
        resume_from(_trainer()[0], tmp_path, str(root / "step-2"))
    # nothing usable at all
    _damage(root / "step-1", "no_marker")
    with pytest.raises(RuntimeError, match="none of the 6 checkpoints"), warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        resume_from(_trainer()[0], tmp_path, "latest")


@pytest.mark.parametrize("where", ["accelerate", "safetensors", "marker"])
def test_full_disk_gives_a_clear_error_and_leaves_nothing_behind(tmp_path, monkeypatch, where):
    trainer = _trainer()
    _train(trainer, tmp_path, 1)
    original = OSError(errno.ENOSPC, "No space left on device")
    if where == "accelerate":
        real = trainer[0].save_state

        def save_state(output_dir, **kwargs):
            real(output_dir, **kwargs)  # some files land, then the disk is full
            raise original

        monkeypatch.setattr(trainer[0], "save_state", save_state)
    elif where == "safetensors":

        def save_file(*args, **kwargs):
            raise original

        monkeypatch.setattr(trainer_checkpoint, "save_file", save_file)
    else:
        real_dump = json.dump

        def dump(obj, f, **kwargs):
            if "files" in obj:
                raise original
            return real_dump(obj, f, **kwargs)

        monkeypatch.setattr(trainer_checkpoint.json, "dump", dump)
    with pytest.raises(OSError, match=r"no space left on device while writing checkpoint .*step-2") as info:
        _train(trainer, tmp_path, 1)
    assert info.value.errno == errno.ENOSPC and info.value.__cause__ is original
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]
    assert checkpoint_problem(tmp_path / "checkpoints/step-1") is None


def test_resume_never_unpickles(tmp_path, monkeypatch):
    """No .pkl in a checkpoint; resuming reads safetensors, JSON and torch.load(weights_only=True) only."""
    trainer = _trainer()
    _train(trainer, tmp_path, 2)
    checkpoint = tmp_path / "checkpoints/step-2"
    assert not list(checkpoint.glob("*.pkl"))
    assert sorted(p.name for p in checkpoint.glob("*.bin")) == ["optimizer.bin"]
    calls = []
    real_load = torch.load

    def guarded_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        if kwargs.get("weights_only") is not True:
            raise AssertionError(f"torch.load without weights_only=True: {args} {kwargs}")
        return real_load(*args, **kwargs)

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle.load(s) during resume")

    monkeypatch.setattr(torch, "load", guarded_load)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    fresh = _trainer()
    assert resume_from(fresh[0], tmp_path, "latest") == checkpoint
    assert fresh[3].step == 2 and calls and all(calls)  # the optimizer went through torch.load(weights_only=True)


def test_metrics_rows_after_the_checkpoint_are_dropped(tmp_path):
    trainer = _trainer()
    _train(trainer, tmp_path, 2)
    logger = MetricsLogger(trainer[0], tmp_path / "metrics.jsonl")
    for step in (1, 2, 3, 4):
        logger.log({"loss": 1.0}, step=step)
    logger.log({"eval/psnr": 1.0}, step=2)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss"')  # the interrupted run died mid-line
    fresh = _trainer()
    resume_from(fresh[0], tmp_path, "latest")
    MetricsLogger(fresh[0], tmp_path / "metrics.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 2]
    assert not list(tmp_path.glob("metrics.jsonl.tmp"))


# ---------------------------------------------------------------------------------------------- the real script
def test_tokenizer_checkpoint_holds_only_trainable_state(digits, tmp_path):
    """The tiny tokenizer with the full default loss (frozen LPIPS-VGG inside MergeVQLoss): the checkpoint holds no
    pickle and no frozen network. Bound: folder <= optimizer files + 2 x model.safetensors (weights + EMA) +
    discriminator weights + source recovery weights + 1 MiB (the pickled MergeVQLoss alone used to be ~70 MB).
    (Interrupted + resumed runs, with a damaged newest checkpoint, are in
    test_training_scripts.py::test_train_tokenizer_resumes_exactly.)"""
    load_example("train_tokenizer").main(
        [
            *("--dataset", str(digits), "--preset", "tiny", "--batch-size", "4", "--max-steps", "1"),
            *("--eval-split", "", "--teacher", "", "--shuffle-buffer", "16", "--output-dir", str(tmp_path)),
        ]
    )
    checkpoint = tmp_path / "checkpoints/step-1"
    sizes = {p.name: p.stat().st_size for p in checkpoint.iterdir()}
    assert sorted(sizes) == [
        "COMPLETE",
        "model.safetensors",
        "model_1.safetensors",  # the source recovery, trained with the tokenizer by default
        "optimizer.bin",
        "optimizer_1.bin",
        "rng_state_0.safetensors",
        "state_ema.safetensors",
        "state_gan.safetensors",
        "state_training.safetensors",
    ]
    assert checkpoint_problem(checkpoint, 0) is None
    gan = load_file(checkpoint / "state_gan.safetensors")
    assert {k.split("/")[0] for k in gan} == {"discriminator", "lecam"}, "no LPIPS in the checkpoint"
    disc_bytes = sum(v.numel() * v.element_size() for v in gan.values())
    optimizer_bytes = sizes["optimizer.bin"] + sizes["optimizer_1.bin"]
    bound = optimizer_bytes + 2 * sizes["model.safetensors"] + sizes["model_1.safetensors"] + disc_bytes + 2**20
    assert sum(sizes.values()) <= bound, (sizes, bound)
    ema = load_file(checkpoint / "state_ema.safetensors")
    model = load_file(checkpoint / "model.safetensors")
    assert {k.removeprefix("shadow/") for k in ema if k.startswith("shadow/")} == set(model)
