"""Data parallel is really data parallel: two CPU processes (gloo, ``accelerate launch``) train, and after
several optimizer steps every replica holds the same parameters (gradients were averaged), which differ from
the initialisation (training happened). Each process dumps its own copy when training ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import EXAMPLES

LAUNCH = [
    *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
    *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"),
]

# Runs an example as __main__; when it ends training, every process writes its own unwrapped models.
DUMP_REPLICAS = textwrap.dedent(
    """
    import runpy, sys
    from accelerate import Accelerator
    from safetensors.torch import save_file

    out, script = sys.argv[1], sys.argv[2]
    end_training = Accelerator.end_training

    def dump_then_end(self):
        for i, model in enumerate(self._models):
            state = {k: v.detach().cpu().clone() for k, v in self.unwrap_model(model).state_dict().items()}
            save_file(state, f"{out}/rank{self.process_index}-model{i}.safetensors")
        end_training(self)

    Accelerator.end_training = dump_then_end
    sys.argv = sys.argv[2:]
    runpy.run_path(script, run_name="__main__")
    """
)


def _launch_and_dump(tmp_path: Path, script: str, args: list[str]) -> tuple[dict, dict]:
    runner = tmp_path / "dump_replicas.py"
    runner.write_text(DUMP_REPLICAS)
    dumps = tmp_path / "replicas"
    dumps.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*LAUNCH, str(runner), str(dumps), str(EXAMPLES / script), *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return load_file(dumps / "rank0-model0.safetensors"), load_file(dumps / "rank1-model0.safetensors")


def _assert_same_replicas(rank0: dict, rank1: dict) -> None:
    assert rank0.keys() == rank1.keys()
    differing = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not differing, f"replicas diverged (gradients not averaged): {differing[:5]}"


@pytest.mark.parametrize("arch", ["mergear", "random-ar"])
def test_generator_replicas_stay_identical(arch, codes_dir, tmp_path):
    args = [
        *("--codes", str(codes_dir), "--preset", "tiny", "--batch-size", "4", "--max-steps", "4", "--arch", arch),
        *("--save-every", "100", "--log-every", "1", "--config-overrides", '{"num_classes": 10}'),
        *("--output-dir", str(tmp_path / "run")),
    ]
    rank0, rank1 = _launch_and_dump(tmp_path, "train_generator.py", args)
    _assert_same_replicas(rank0, rank1)
    final = load_file(tmp_path / "run/final/model.safetensors")
    assert all(torch.equal(final[k], rank0[k]) for k in final)


def test_tokenizer_replicas_stay_identical(digits, tmp_path):
    args = [
        *("--dataset", str(digits), "--preset", "tiny", "--batch-size", "4", "--max-steps", "3"),
        *("--save-every", "100", "--eval-split", "", "--teacher", "", "--log-every", "1"),
        *("--shuffle-buffer", "16", "--output-dir", str(tmp_path / "run")),
    ]
    rank0, rank1 = _launch_and_dump(tmp_path, "train_tokenizer.py", args)
    _assert_same_replicas(rank0, rank1)


def test_finetune_classifier_replicas_stay_identical(digits, tmp_path):
    """Fine-tuning (mixup / cutmix, RandAugment, layer-wise lr decay, drop path) is data parallel too."""
    args = [
        *("--dataset", str(digits), "--eval-split", "", "--batch-size", "4", "--max-steps", "3"),
        *("--warmup-steps", "1", "--save-every", "100", "--log-every", "1", "--output-dir", str(tmp_path / "run")),
    ]
    rank0, rank1 = _launch_and_dump(tmp_path, "finetune_classifier.py", args)
    _assert_same_replicas(rank0, rank1)
    from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR

    start = load_file(DEFAULT_PIPELINE_DIR / "tokenizer/model.safetensors")
    changed = [k for k in rank0 if k in start and not torch.equal(rank0[k], start[k])]
    assert any(".attn.blocks." in k for k in changed), "the encoder did not train"


# Runs an example as __main__; rank 0 alone (of 2) sends itself SIGTERM during optimizer step 3.
SIGNAL_RANK0 = textwrap.dedent(
    """
    import os, runpy, signal, sys
    from mergevq_hf.training.loop import TrainingLoop

    step_completed = TrainingLoop.step_completed

    def signalled(self):
        done = step_completed(self)
        if done and self.state.step == 3 and self.accelerator.process_index == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return done

    TrainingLoop.step_completed = signalled
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def test_sigterm_on_one_process_checkpoints_all_and_resumes_exactly(codes_dir, tmp_path):
    """Two processes (gloo); one gets SIGTERM mid-run: both stop after the same step (a collective), one complete
    checkpoint is written with both processes' RNG states, the run exits with the resume status and says how to
    resume, and ``--resume latest`` then ends with exactly the weights of an uninterrupted run."""
    runner = tmp_path / "signal_rank0.py"
    runner.write_text(SIGNAL_RANK0)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script = str(EXAMPLES / "train_generator.py")
    common = [
        *("--codes", str(codes_dir), "--arch", "mergear", "--preset", "tiny", "--batch-size", "4"),
        *("--config-overrides", '{"num_classes": 10}', "--max-steps", "6", "--save-every", "100", "--log-every", "1"),
    ]

    def run(*command):
        return subprocess.run([*LAUNCH, *command], env=env, capture_output=True, text=True, timeout=600)

    straight = run(script, *common, "--output-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-4000:]
    cut = run(str(runner), script, *common, "--output-dir", str(tmp_path / "cut"))
    assert cut.returncode != 0, "a preempted run must not look finished"
    assert "preempted by SIGTERM at step 3" in cut.stdout and "--resume latest" in cut.stdout, cut.stdout[-2000:]
    checkpoint = tmp_path / "cut/checkpoints/step-3"
    assert (checkpoint / "COMPLETE").is_file() and not (tmp_path / "cut/final").exists()
    assert sorted(p.name for p in checkpoint.glob("rng_state_*")) == [
        "rng_state_0.safetensors",
        "rng_state_1.safetensors",
    ]
    resumed = run(script, *common, "--output-dir", str(tmp_path / "cut"), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a = load_file(tmp_path / "straight/final/model.safetensors")
    b = load_file(tmp_path / "cut/final/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    rows = [json.loads(line) for line in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert all(row["samples_per_s"] > 0 and 0 <= row["data_wait_fraction"] <= 1 for row in rows)
