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
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from tqdm.auto import tqdm

from ..model_card import write_model_card
from .checkpoint import TrainingState, save_checkpoint


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
    ):
        for name, value, minimum in (("max_steps", max_steps, 1), ("save_every", save_every, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r}; allowed: an int >= {minimum}")
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
        )

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def __iter__(self) -> Iterator[Any]:
        state = self.state
        while state.step < self.max_steps:
            set_loader_epoch(self.loader, state.epoch)
            skip = state.step_in_epoch
            batches = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
            for batch in batches:
                self._completed = False
                yield batch
                state.step_in_epoch += 1
                if self._completed and (state.step % self.save_every == 0 or state.step == self.max_steps):
                    save_checkpoint(self.accelerator, self.output_dir, state.step, self.total_limit)
                if state.step >= self.max_steps:
                    break
            else:
                state.epoch += 1
                state.step_in_epoch = 0
        self.progress.close()

    def step_completed(self) -> bool:
        """Call once after each micro-batch: True (and ``state.step`` advanced) when the optimizer stepped, i.e.
        at a gradient-synchronising micro-batch."""
        if not self.accelerator.sync_gradients:
            return False
        self.state.step += 1
        self.progress.update(1)
        self._completed = True
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
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


__all__ = ["TrainingLoop", "set_loader_epoch"]
