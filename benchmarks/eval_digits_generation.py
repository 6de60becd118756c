"""Class-conditional generation on the local digits data, judged by an independent classifier; several pipelines
compared on one footing (same labels, seeds, K; guidance: each pipeline's recommended scale unless
--guidance-scale sets one for all).

A scikit-learn classifier is trained on real digits (the train split, pooled back to 8x8 as in
``sklearn.datasets.load_digits``). It reports its accuracy on real held-out digits and on the tokenizer's
reconstructions of them, then, for each pipeline, how often it recognises the requested class in generated images,
the generator's sampling steps, and the wall time per image on this machine (batches of one image per class, the
pipelines interleaved batch by batch; median and interquartile range over the batches).

    python benchmarks/eval_digits_generation.py --data data/digits \
        --pipeline mergear=PIPELINE_DIR --pipeline random-ar=OTHER_DIR:12 --per-class 20
    (NAME=DIR[:STEPS]; STEPS = num_inference_steps for a random-order generator)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from mergevq_hf import MergeVQPipeline
from mergevq_hf.image_utils import make_grid
from mergevq_hf.training.data import load_split_tensors


def to_features(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> [B, 64] grey 8x8 on the 0..16 scale of load_digits."""
    grey = images.clamp(-1, 1).mean(1, keepdim=True)
    pooled = F.adaptive_avg_pool2d(grey, 8)
    return ((pooled + 1) * 8).flatten(1).numpy()


def parse_pipeline(text: str) -> tuple[str, str, int | None]:
    name, _, rest = text.partition("=")
    if not rest:
        raise ValueError(f"--pipeline {text!r}; allowed: NAME=DIR or NAME=DIR:STEPS")
    folder, _, steps = rest.rpartition(":") if rest.rpartition(":")[2].isdigit() else (rest, "", "")
    return name, folder, int(steps) if steps else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--pipeline", action="append", required=True, help="NAME=DIR[:STEPS] (repeatable)")
    p.add_argument("--num-tokens", type=int, default=36)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument(
        "--guidance-scale", type=float, default=None, help="default: each pipeline's own (pipe.default_guidance_scale)"
    )
    p.add_argument(
        "--temperature", type=float, default=None, help="default: each pipeline's own (pipe.sampling_defaults)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--grid-prefix", default="digits_generated")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = [parse_pipeline(text) for text in args.pipeline]
    pipes = {name: MergeVQPipeline.from_pretrained(folder) for name, folder, _ in variants}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    tokenizer = next(iter(pipes.values())).tokenizer
    size = tokenizer.config.resolution
    train_x, train_y = load_split_tensors(args.data, "train", size)
    test_x, test_y = load_split_tensors(args.data, "test", size)
    classifier = LogisticRegression(max_iter=5000).fit(to_features(train_x), train_y.numpy())
    with torch.no_grad():
        enc = tokenizer.encode(test_x, num_tokens=args.num_tokens)
        recon = tokenizer.decode(tokenizer.unmerge(enc.indices, enc.source))
    report = {
        "classifier_accuracy_real_heldout": round(
            float((classifier.predict(to_features(test_x)) == test_y.numpy()).mean()), 4
        ),
        "classifier_accuracy_reconstructed_heldout": round(
            float((classifier.predict(to_features(recon)) == test_y.numpy()).mean()), 4
        ),
        "num_tokens": args.num_tokens,
        "guidance_scale": args.guidance_scale or "each pipeline's default",
        "temperature": args.temperature or "each pipeline's default",
        "torch_threads": torch.get_num_threads(),
        "generators": {},
    }
    images = {name: [] for name in pipes}
    seconds = {name: [] for name in pipes}
    steps = {}
    labels = list(range(10))
    for batch in range(args.per_class):  # one image per class per batch, the pipelines interleaved
        seeds = [args.seed + batch * 10 + c for c in labels]
        for name, _, num_steps in variants:
            kwargs = {"num_inference_steps": num_steps} if num_steps else {}
            start = time.perf_counter()
            out = pipes[name](
                class_labels=labels,
                num_tokens=args.num_tokens,
                guidance_scale=args.guidance_scale,
                temperature=args.temperature,
                generator=[torch.Generator().manual_seed(s) for s in seeds],
                output_type="pt",
                **kwargs,
            )
            seconds[name].append((time.perf_counter() - start) / len(labels))
            images[name].append(out.images * 2 - 1)
            steps[name] = out.num_steps
    wanted = np.tile(np.arange(10), args.per_class)
    for name, folder, _ in variants:
        generated = torch.cat(images[name])
        accuracy = float((classifier.predict(to_features(generated)) == wanted).mean())
        q = statistics.quantiles(seconds[name], n=4) if len(seconds[name]) > 1 else [seconds[name][0]] * 3
        report["generators"][name] = {
            "pipeline": folder,
            "transformer": type(pipes[name].transformer).__name__,
            "steps": steps[name],
            "guidance_scale": args.guidance_scale or pipes[name].default_guidance_scale,
            "temperature": pipes[name].sampling_defaults["temperature"]
            if args.temperature is None
            else args.temperature,
            "seconds_per_image_median": round(statistics.median(seconds[name]), 4),
            "seconds_per_image_iqr": [round(q[0], 4), round(q[2], 4)],
            "recognised_as_requested": round(accuracy, 4),
            "num_generated": len(generated),
        }
        rows = min(args.per_class, 10)
        grid = make_grid(generated[: rows * 10], ncols=10)
        grid.resize((grid.width * 4, grid.height * 4)).save(f"{args.grid_prefix}_{name}.png")
    print(json.dumps(report, indent=1))
    print(
        "\n| generator | steps | CFG | temperature | s / image (median, IQR) | recognised as requested |"
        "\n|---|---|---|---|---|---|"
    )
    for name, row in report["generators"].items():
        iqr = row["seconds_per_image_iqr"]
        print(
            f"| {name} | {row['steps']} | {row['guidance_scale']} | {row['temperature']} "
            f"| {row['seconds_per_image_median']} ({iqr[0]}-{iqr[1]}) | {row['recognised_as_requested']} |"
        )
    print(f"| real held-out digits | | | | | {report['classifier_accuracy_real_heldout']} |")


if __name__ == "__main__":
    main()
