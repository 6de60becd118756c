"""The one training-loop skeleton of the example scripts: epochs, exact resume, progress, checkpoints, export.

A script keeps its own step body and reads top to bottom::

    loop = TrainingLoop.from_args(accelerator, loader, state, args, desc="recovery")  # or TrainingLoop(..., max_steps=)
    for batch in loop:                     # epochs roll over; a resumed run skips the batches already used
        ... forward, backward, optimizer step (inside accelerator.accumulate where it accumulates) ...
        if not loop.step_completed():      # False between gradient-accumulation micro-batches
            continue
        if loop.every(args.log_every): ... # state.step is the number of completed optimizer steps
    # a checkpoint was written every save_every steps and at max_steps (after the body's logging)
    final = loop.export(model, "mergear", vars(args))   # output/final + model card (main process; None elsewhere)
    loop.finish()

Resume (one strategy for every loader): ``state`` (epoch, batches used in it) comes back from the checkpoint; the
epoch's order is recreated with ``set_epoch`` and ``accelerator.skip_first_batches`` drops the batches already
used: index-level for a prepared map-style loader, drawn and dropped for a stream (an ``IterableDataset``).

Preemption: SIGTERM and SIGUSR1 (``stop_signals``; what schedulers send before they kill a job) only set a flag;
after every completed optimizer step all processes agree on it (one all-reduce), so when any process was
signalled every process stops at the same step, a complete checkpoint is written, the main process prints one
line saying how to resume, and the run exits with :data:`PREEMPTED_EXIT_CODE`. ``--resume latest`` continues
exactly there (same step, same data order).

Bad steps: ``if loop.good_step(loss, grad_norm): optimizer.step()`` decides on every process together (one
all-reduce) whether the values are finite; a non-finite step is not applied (with a GradScaler the optimizer
still steps: the scaler skips non-finite updates itself and must lower its scale), is counted
(``state.bad_steps``, :meth:`throughput` logs it) and reported; no checkpoint is written while steps are bad, and
after ``max_bad_steps`` consecutive bad steps the run stops with :class:`BadStepsError`, the last good checkpoint
intact.

Throughput: :meth:`throughput` gives samples/s (all processes) and the fraction of wall time spent waiting for the
loader since the previous call, for ``metrics.jsonl`` and the progress bar.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..model_card import write_model_card
from .checkpoint import TrainingState, any_process, save_checkpoint

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again" (resume)
DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class BadStepsError(RuntimeError):
    """Too many consecutive optimizer steps with a non-finite loss or gradient norm."""


def _batch_size(batch) -> int:
    """Samples in a micro-batch: the first dimension of its first tensor (dict values, sequence items)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    return 0


def set_loader_epoch(loader, epoch: int) -> None:
    """New shuffling / augmentation for ``epoch``: a prepared loader's ``set_epoch`` (sampler and dataset), else
    the dataset's own (``RobustImageStream``, a ``datasets`` stream)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif hasattr(getattr(loader, "dataset", None), "set_epoch"):
        loader.dataset.set_epoch(epoch)


class TrainingLoop:
    """Iterate batches until ``state.step`` reaches ``max_steps``; see the module docstring for the pattern."""

    def __init__(
        self,
        accelerator: Accelerator,
        loader,
        state: TrainingState,
        output_dir: str | Path,
        *,
        max_steps: int,
        save_every: int,
        total_limit: int | None = None,
        desc: str = "train",
        stop_signals: tuple[str, ...] = DEFAULT_STOP_SIGNALS,
        max_bad_steps: int = 20,
    ):
        checks = (("max_steps", max_steps, 1), ("save_every", save_every, 1), ("max_bad_steps", max_bad_steps, 1))
        for name, value, minimum in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r}; allowed: an int >= {minimum}")
        unknown = [name for name in stop_signals if not isinstance(getattr(signal, str(name), None), signal.Signals)]
        if unknown:
            raise ValueError(f"stop_signals {unknown} are not signals of this platform; e.g. {DEFAULT_STOP_SIGNALS}")
        self.accelerator = accelerator
        self.loader = loader
        self.state = state
        self.output_dir = Path(output_dir)
        self.max_steps = max_steps
        self.save_every = save_every
        self.total_limit = total_limit
        self.progress = tqdm(
            total=max_steps, initial=state.step, disable=not accelerator.is_main_process, desc=desc, dynamic_ncols=True
        )
        self._completed = False
        self.max_bad_steps = max_bad_steps
        self._step_bad = False
        self.consecutive_bad_steps = 0
        self._signalled: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for name in stop_signals:
                number = getattr(signal, name)
                self._previous_handlers[number] = signal.signal(number, self._on_signal)
        self._clock = time.perf_counter()
        self._waited = 0.0
        self._samples = 0

    @classmethod
    def from_args(cls, accelerator: Accelerator, loader, state: TrainingState, args, desc: str) -> TrainingLoop:
        """The loop of a training script whose arguments have ``output_dir``, ``max_steps``, ``save_every`` and
        ``total_limit`` (the example scripts' common flags)."""
        return cls(
            accelerator,
            loader,
            state,
            args.output_dir,
            max_steps=args.max_steps,
            save_every=args.save_every,
            total_limit=args.total_limit,
            desc=desc,
            stop_signals=tuple(getattr(args, "stop_signals", DEFAULT_STOP_SIGNALS)),
            max_bad_steps=getattr(args, "max_bad_steps", 20),
        )

    @staticmethod
    def add_arguments(parser) -> None:
        """The preemption and bad-step flags every training script shares (read by :meth:`from_args`)."""
        parser.add_argument(
            "--stop-signals",
            nargs="*",
            default=list(DEFAULT_STOP_SIGNALS),
            help="signals that checkpoint and stop the run at the next step (default: %(default)s)",
        )
        parser.add_argument(
            "--max-bad-steps",
            type=int,
            default=20,
            help="stop after this many consecutive steps with a non-finite loss / gradient norm (default: %(default)s)",
        )

    def _on_signal(self, signum, frame) -> None:
        self._signalled = signum

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def __iter__(self) -> Iterator[Any]:
        state = self.state
        try:
            while state.step < self.max_steps:
                set_loader_epoch(self.loader, state.epoch)
                skip = state.step_in_epoch
                batches = iter(self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader)
                while True:
                    waiting = time.perf_counter()
                    batch = next(batches, _END)
                    self._waited += time.perf_counter() - waiting
                    if batch is _END:
                        state.epoch += 1
                        state.step_in_epoch = 0
                        break
                    self._samples += _batch_size(batch)
                    self._completed = False
                    self._step_bad = False
                    yield batch
                    state.step_in_epoch += 1
                    if not self._completed:
                        continue
                    saved = False
                    if self.consecutive_bad_steps == 0 and (
                        state.step % self.save_every == 0 or state.step == self.max_steps
                    ):
                        save_checkpoint(self.accelerator, self.output_dir, state.step, self.total_limit)
                        saved = True
                    if any_process(self.accelerator, self._signalled is not None):
                        self._stop_preempted(saved)
                    if state.step >= self.max_steps:
                        break
        finally:
            self.progress.close()
            self._restore_signals()

    def _stop_preempted(self, saved: bool) -> None:
        state = self.state
        if not saved:
            save_checkpoint(self.accelerator, self.output_dir, state.step, self.total_limit)
        self.accelerator.wait_for_everyone()
        if self.is_main_process:
            name = (
                signal.Signals(self._signalled).name if self._signalled is not None else "a signal on another process"
            )
            self.progress.close()
            print(
                f"preempted by {name} at step {state.step}: checkpoint "
                f"{self.output_dir / 'checkpoints' / f'step-{state.step}'} written; rerun the same command with "
                "--resume latest to continue",
                flush=True,
            )
        self.accelerator.end_training()
        raise SystemExit(PREEMPTED_EXIT_CODE)

    def _restore_signals(self) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers = {}

    def good_step(self, *values) -> bool:
        """Call at a gradient-synchronising micro-batch, after clipping and before ``optimizer.step()``: whether
        every value (loss, gradient norm; tensors or numbers) is finite on every process (one all-reduce). False:
        skip the update (see the module docstring; with a GradScaler this returns True, the scaler skips it)."""
        device = self.accelerator.device
        flags = [~torch.isfinite(torch.as_tensor(v).detach().to(device, torch.float32)).all() for v in values]
        bad = any_process(self.accelerator, torch.stack(flags).any())  # one host read, after the all-reduce
        if bad:
            self._step_bad = True
            if self.is_main_process:
                self.progress.write(f"step {self.state.step + 1}: non-finite loss or gradient norm, update skipped")
        return not bad or getattr(self.accelerator, "scaler", None) is not None

    def throughput(self) -> dict[str, float]:
        """Since the previous call: ``samples_per_s`` over all processes, ``data_wait_fraction`` (of wall time spent
        waiting for the loader, this process) and the run's ``bad_steps`` so far."""
        now = time.perf_counter()
        elapsed = max(now - self._clock, 1e-9)
        samples = self._samples * self.accelerator.num_processes
        out = {
            "samples_per_s": round(samples / elapsed, 3),
            "data_wait_fraction": round(min(self._waited / elapsed, 1.0), 4),
            "bad_steps": self.state.bad_steps,
        }
        self._clock, self._waited, self._samples = now, 0.0, 0
        return out

    def step_completed(self) -> bool:
        """Call once after each micro-batch: True (and ``state.step`` advanced) when the optimizer stepped, i.e.
        at a gradient-synchronising micro-batch."""
        if not self.accelerator.sync_gradients:
            return False
        self.state.step += 1
        self.progress.update(1)
        self._completed = True
        if self._step_bad:
            self.state.bad_steps += 1
            self.consecutive_bad_steps += 1
            if self.consecutive_bad_steps >= self.max_bad_steps:
                raise BadStepsError(
                    f"{self.consecutive_bad_steps} consecutive steps with a non-finite loss or gradient norm (up to "
                    f"step {self.state.step}; --max-bad-steps {self.max_bad_steps}): stopped; the checkpoints under "
                    f"{self.output_dir / 'checkpoints'} hold the last good weights (no checkpoint was written since)"
                )
        else:
            self.consecutive_bad_steps = 0
        return True

    def every(self, interval: int | None) -> bool:
        """True on completed steps that are multiples of ``interval`` (never for 0 / None)."""
        return bool(interval) and self._completed and self.state.step % interval == 0

    def set_postfix(self, **values) -> None:
        self.progress.set_postfix(**values)

    def export(self, model, card: str, training_args: dict, **card_kwargs) -> Path | None:
        """After the loop: wait for every process, then the main process saves ``model`` (unwrapped) to
        ``output_dir/final`` with a model card of kind ``card`` (``training``: the steps done and
        ``training_args``; ``card_kwargs`` go to ``write_model_card``). Returns the folder there, None elsewhere."""
        self.accelerator.wait_for_everyone()
        if not self.is_main_process:
            return None
        final = self.output_dir / "final"
        self.accelerator.unwrap_model(model).save_pretrained(final)
        write_model_card(final, card, training={"steps": self.state.step, **training_args}, **card_kwargs)
        return final

    def finish(self) -> None:
        """Wait for every process (the main one may still be exporting) and end the trackers."""
        self._restore_signals()
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


_END = object()

__all__ = ["BadStepsError", "PREEMPTED_EXIT_CODE", "TrainingLoop", "set_loader_epoch"]
