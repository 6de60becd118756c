"""Do the generation metrics rank what they should? On the local digits (all 1797 sklearn digits, 30% held out),
against the train split as the reference, the same number of images from each of:

    real held-out digits  <  the embedded pipelines  <  a "generator" emitting uniformly random codes

should order FID from low to high and precision from high to low (the real Inception network, offline).

    python benchmarks/eval_generation_sanity.py --data data/digits-eval --num-images 500
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mergevq_hf import MergeVQPipeline
from mergevq_hf.defaults import DEFAULT_PIPELINES
from mergevq_hf.evaluation import GaussianStatistics, InceptionFeatures, frechet_distance
from mergevq_hf.evaluation.generation import evaluate_generation
from mergevq_hf.evaluation.precision_recall import precision_recall
from mergevq_hf.evaluation.reference import FIDReference
from mergevq_hf.image_utils import make_grid
from mergevq_hf.testing import build_local_dataset
from mergevq_hf.training.data import DataConfig


def scores(reference: FIDReference, features: torch.Tensor) -> dict:
    fid = frechet_distance(GaussianStatistics.from_features(features), reference.statistics)
    return {"fid": round(fid, 3), **{k: round(v, 4) for k, v in precision_recall(reference.features, features).items()}}


@torch.no_grad()
def random_code_features(tokenizer, inception, count: int, batch_size: int, grid: Path) -> torch.Tensor:
    """Images decoded from code maps whose L codes are drawn uniformly (image i from seed i)."""
    codebook = 2**tokenizer.config.code_dim
    positions = tokenizer.config.num_positions
    features, first = [], None
    for start in range(0, count, batch_size):
        codes = torch.stack(
            [
                torch.randint(codebook, (positions,), generator=torch.Generator().manual_seed(i))
                for i in range(start, min(count, start + batch_size))
            ]
        )
        images = tokenizer.decode(codes).clamp(-1, 1)
        images = ((images + 1) * 127.5).round() / 127.5 - 1  # 8-bit, as the generated images
        first = images if first is None else first
        features.append(inception(images).float())
    make_grid(first[:40], ncols=10).save(grid)
    return torch.cat(features)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/digits-eval")
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--output", default="runs/eval-sanity")
    args = parser.parse_args(argv)
    data, output = Path(args.data), Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        build_local_dataset("digits", data, size=32, num_per_image=200, holdout_fraction=0.3, seed=0)
    inception = InceptionFeatures()
    config = DataConfig(dataset=str(data), split="train", label_column=None, resolution=32)
    reference = FIDReference.from_dataset(config, inception, cache=data / "reference-train.npz")
    rows = {}
    held_out = FIDReference.from_dataset(
        DataConfig(dataset=str(data), split="test", label_column=None, resolution=32),
        inception,
        max_images=args.num_images,
    )
    rows["real held-out digits"] = scores(reference, held_out.features)
    for name, folder in DEFAULT_PIPELINES.items():
        pipe = MergeVQPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        result = evaluate_generation(
            pipe,
            reference,
            num_images=args.num_images,
            batch_size=args.batch_size,
            inception=inception,
            grid_path=output / f"{name}.png",
            grid_images=40,
        )
        rows[f"embedded {name} pipeline"] = {
            "fid": round(result["gfid"], 3),
            "precision": round(result["precision"], 4),
            "recall": round(result["recall"], 4),
        }
    tokenizer = MergeVQPipeline.from_pretrained(DEFAULT_PIPELINES["mergear"]).tokenizer
    random_features = random_code_features(
        tokenizer, inception, args.num_images, args.batch_size, output / "random-codes.png"
    )
    rows["random codes"] = scores(reference, random_features)
    print(f"reference: {reference.source}")
    print(f"| set ({args.num_images} images each) | FID | precision | recall |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['fid']} | {row['precision']} | {row['recall']} |")
    (output / "sanity.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
