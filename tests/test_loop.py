"""TrainingLoop: the loop skeleton shared by the training scripts (steps, accumulation, epochs, checkpoints, resume)."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from mergevq_hf.training.checkpoint import TrainingState, list_checkpoints, register_for_checkpointing, resume_from
from mergevq_hf.training.loop import PREEMPTED_EXIT_CODE, BadStepsError, TrainingLoop


class Stream(torch.utils.data.IterableDataset):
    """An epoch-seeded stream (like RobustImageStream): set_epoch changes the order."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        yield from torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch)).tolist()


def _run(tmp_path, kind: str, max_steps: int, accumulation: int, resume: str | None = None, stop_at: int | None = None):
    """Micro-batches seen as (step, epoch, value); the optimizer 'steps' are the loop's completed steps."""
    accelerator = Accelerator(
        gradient_accumulation_steps=accumulation,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if kind == "stream":  # unprepared, sharded by us (the tokenizer script)
        loader = torch.utils.data.DataLoader(Stream(7), batch_size=1)
    else:  # a prepared map-style loader (the code datasets)
        loader = accelerator.prepare(torch.utils.data.DataLoader(list(range(7)), batch_size=1, shuffle=True))
    model = accelerator.prepare(torch.nn.Linear(1, 1))
    state = TrainingState()
    register_for_checkpointing(accelerator, training=state)
    resume_from(accelerator, tmp_path, resume)
    loop = TrainingLoop(accelerator, loader, state, tmp_path, max_steps=max_steps, save_every=2, desc="test")
    seen = []
    for batch in loop:
        with accelerator.accumulate(model):
            seen.append((state.step, state.epoch, int(batch[0])))
        if not loop.step_completed():
            continue
        assert loop.every(2) == (state.step % 2 == 0) and not loop.every(0)
        if stop_at is not None and state.step == stop_at:
            break
    return seen, state


@pytest.mark.parametrize("kind", ["stream", "prepared"])
def test_steps_epochs_checkpoints_and_exact_resume(tmp_path, kind):
    full, state = _run(tmp_path / "full", kind, max_steps=6, accumulation=2)
    assert (state.step, state.epoch) == (6, 1)  # 7 micro-batches per epoch, 2 per optimizer step
    epoch0 = [value for _, epoch, value in full if epoch == 0]
    assert sorted(epoch0) == list(range(7)) and epoch0 == [value for _, _, value in full[:7]]
    assert [value for _, epoch, value in full if epoch == 1] != epoch0[: len(full) - 7]  # set_epoch: a new order
    assert [p.name for p in list_checkpoints(tmp_path / "full")] == ["step-2", "step-4", "step-6"]
    # stop right after step 3 (break: the loop never writes step 3's checkpoint, and 3 is not a multiple of 2);
    # resuming from step-2 replays exactly the micro-batches of steps 3.. of the uninterrupted run
    _run(tmp_path / "cut", kind, max_steps=6, accumulation=2, stop_at=3)
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-2"]
    resumed, state = _run(tmp_path / "cut", kind, max_steps=6, accumulation=2, resume="latest")
    assert state.step == 6 and resumed == [entry for entry in full if entry[0] >= 2]


def test_arguments_are_checked(tmp_path):
    accelerator = Accelerator()
    with pytest.raises(ValueError, match="max_steps=0"):
        TrainingLoop(accelerator, [], TrainingState(), tmp_path, max_steps=0, save_every=1)
    with pytest.raises(ValueError, match="save_every=True"):
        TrainingLoop(accelerator, [], TrainingState(), tmp_path, max_steps=1, save_every=True)


def _train_linear(tmp_path, max_steps, nan_steps=(), signal_at=None, resume=None, max_bad_steps=20):
    """A 1-parameter model trained with SGD on y = 2x through the loop; the loss is NaN at ``nan_steps`` and the
    process sends itself SIGTERM during step ``signal_at``. Returns (state, loop, weights after each step)."""
    accelerator = Accelerator()
    loader = accelerator.prepare(torch.utils.data.DataLoader([float(i + 1) for i in range(5)], batch_size=1))
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainingState()
    register_for_checkpointing(accelerator, training=state)
    resume_from(accelerator, tmp_path, resume)
    loop = TrainingLoop(
        accelerator, loader, state, tmp_path, max_steps=max_steps, save_every=2, max_bad_steps=max_bad_steps
    )
    weights = {}
    for batch in loop:
        x = batch.float()[:, None]
        loss = ((model(x) - 2 * x) ** 2).mean()
        if state.step + 1 in nan_steps:
            loss = loss * float("nan")
        if state.step + 1 == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's notice, mid-step
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), 10.0)
        if loop.good_step(loss, grad_norm):
            optimizer.step()
        optimizer.zero_grad()
        if loop.step_completed():
            weights[state.step] = float(accelerator.unwrap_model(model).weight.detach())
    loop.finish()
    return state, loop, weights


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tmp_path):
    state, loop, weights = _train_linear(tmp_path / "one", 6, nan_steps={3})
    assert weights[3] == weights[2] and weights[4] != weights[3], "the NaN step is not applied, the next one is"
    assert all(w == w for w in weights.values()), "no NaN reached the weights"
    assert state.bad_steps == 1 and loop.consecutive_bad_steps == 0
    speed = loop.throughput()
    assert set(speed) == {"samples_per_s", "data_wait_fraction", "bad_steps"} and speed["bad_steps"] == 1
    # a streak of bad steps: no checkpoint while it lasts, and the run stops after max_bad_steps of them
    with pytest.raises(BadStepsError, match="3 consecutive steps with a non-finite loss"):
        _train_linear(tmp_path / "streak", 10, nan_steps=set(range(5, 11)), max_bad_steps=3)
    assert [p.name for p in list_checkpoints(tmp_path / "streak")] == ["step-2", "step-4"]
    state, _, weights = _train_linear(tmp_path / "streak", 4, resume="latest")
    assert state.step == 4 and not weights, "the last good checkpoint loads (nothing left to train)"


def test_a_stop_signal_checkpoints_and_exits_with_the_resume_status(tmp_path, capsys):
    _, _, straight = _train_linear(tmp_path / "straight", 8)
    with pytest.raises(SystemExit) as stopped:
        _train_linear(tmp_path / "cut", 8, signal_at=3)
    assert stopped.value.code == PREEMPTED_EXIT_CODE
    assert "preempted by SIGTERM at step 3" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-2", "step-3"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler is removed again"
    state, _, resumed = _train_linear(tmp_path / "cut", 8, resume="latest")
    assert state.step == 8 and min(resumed) == 4 and all(resumed[s] == straight[s] for s in resumed)
    with pytest.raises(ValueError, match="stop_signals"):
        TrainingLoop(Accelerator(), [], TrainingState(), tmp_path, max_steps=1, save_every=1, stop_signals=("NOPE",))
