"""Do the generation metrics rank what they should, and how close are the digits pipelines to real digits? On the
local digits (all 1797 sklearn digits, 30% held out), against the train split as the reference, the same number of
images from each of:

    real held-out digits  <  the tokenizer's reconstructions of them  <=  each pipeline  <  uniformly random codes

with FID (low is good), precision and recall (k-NN manifolds, k=3) from the real Inception network (offline), and
the class consistency of an independent judge (a LogisticRegression trained on the train split pooled to 8x8, as
``sklearn.datasets.load_digits``; see ``eval_digits_generation.py``): how often it recognises the requested class
(for real and reconstructed digits: their own label).

    python benchmarks/eval_generation_sanity.py --data data/digits-eval --num-images 500
    python benchmarks/eval_generation_sanity.py --pipeline mergear=runs/new-pipeline   # candidate pipelines

``--pipeline NAME=DIR[:STEPS]`` (repeatable, as in ``eval_digits_generation.py``) replaces the embedded pipelines;
the reconstruction row uses the first pipeline's tokenizer at ``--num-tokens`` (default: the tokenizer's K).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

from eval_digits_generation import parse_pipeline, to_features
from mergevq_hf import MergeVQPipeline
from mergevq_hf.defaults import DEFAULT_PIPELINES
from mergevq_hf.evaluation import GaussianStatistics, InceptionFeatures, frechet_distance
from mergevq_hf.evaluation.generation import generate_features
from mergevq_hf.evaluation.precision_recall import precision_recall
from mergevq_hf.evaluation.reference import FIDReference
from mergevq_hf.image_utils import make_grid, tensor_to_uint8, uint8_to_tensor
from mergevq_hf.testing import build_local_dataset
from mergevq_hf.training.data import DataConfig, load_split_tensors


class Judge(torch.nn.Module):
    """The independent digit classifier as a network of generate_features: images -> predicted class [B]."""

    def __init__(self, classifier: LogisticRegression):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.classifier.predict(to_features(images)))


def scores(reference: FIDReference, features: torch.Tensor, predicted=None, wanted=None) -> dict:
    fid = frechet_distance(GaussianStatistics.from_features(features), reference.statistics)
    row = {"fid": round(fid, 3), **{k: round(v, 4) for k, v in precision_recall(reference.features, features).items()}}
    if predicted is not None:
        row["class_consistency"] = round(float((predicted == wanted).float().mean()), 4)
    return row


def as_8bit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images as a reader of their 8-bit PNGs sees them."""
    return uint8_to_tensor(tensor_to_uint8(images.clamp(-1, 1)))


@torch.no_grad()
def batched(network, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([network(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)])


@torch.no_grad()
def random_code_images(tokenizer, count: int, batch_size: int) -> torch.Tensor:
    """Images decoded from code maps whose L codes are drawn uniformly (image i from seed i)."""
    codebook = 2**tokenizer.config.code_dim
    positions = tokenizer.config.num_positions
    out = []
    for start in range(0, count, batch_size):
        codes = torch.stack(
            [
                torch.randint(codebook, (positions,), generator=torch.Generator().manual_seed(i))
                for i in range(start, min(count, start + batch_size))
            ]
        )
        out.append(as_8bit(tokenizer.decode(codes)))
    return torch.cat(out)


@torch.no_grad()
def reconstructions(tokenizer, images: torch.Tensor, num_tokens: int | None, batch_size: int) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch_size):
        enc = tokenizer.encode(images[start : start + batch_size], num_tokens=num_tokens)
        out.append(as_8bit(tokenizer.decode(tokenizer.unmerge(enc.indices, enc.source))))
    return torch.cat(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/digits-eval")
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument(
        "--pipeline", action="append", default=None, help="NAME=DIR[:STEPS] (repeatable); default: embedded"
    )
    parser.add_argument("--num-tokens", type=int, default=None, help="K of the reconstructions (default: tokenizer's)")
    parser.add_argument("--output", default="runs/eval-sanity")
    args = parser.parse_args(argv)
    data, output = Path(args.data), Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        build_local_dataset("digits", data, size=32, num_per_image=200, holdout_fraction=0.3, seed=0)
    variants = [(name, folder, None) for name, folder in DEFAULT_PIPELINES.items()]
    if args.pipeline:
        try:
            variants = [parse_pipeline(text) for text in args.pipeline]
        except ValueError as error:
            parser.error(str(error))
    pipelines = {name: Path(folder) for name, folder, _ in variants}
    inception = InceptionFeatures()
    config = DataConfig(dataset=str(data), split="train", label_column=None, resolution=32)
    reference = FIDReference.from_dataset(config, inception, cache=data / "reference-train.npz")
    train_x, train_y = load_split_tensors(str(data), "train", 32)
    test_x, test_y = load_split_tensors(str(data), "test", 32)
    test_x, test_y = test_x[: args.num_images], test_y[: args.num_images]
    judge = Judge(LogisticRegression(max_iter=5000).fit(to_features(train_x), train_y.numpy()))
    rows = {}
    real = as_8bit(test_x)
    rows[f"real held-out digits ({len(real)})"] = scores(
        reference, batched(inception, real, args.batch_size), judge(real), test_y
    )
    first = MergeVQPipeline.from_pretrained(next(iter(pipelines.values())))
    tokenizer = first.tokenizer.eval()
    num_tokens = args.num_tokens or tokenizer.config.num_tokens
    recon = reconstructions(tokenizer, test_x, num_tokens, args.batch_size)
    make_grid(recon[:40], ncols=10).save(output / "reconstructions.png")
    rows[f"tokenizer reconstructions of them (K={num_tokens})"] = scores(
        reference, batched(inception, recon, args.batch_size), judge(recon), test_y
    )
    for name, folder, steps in variants:
        pipe = MergeVQPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        sampling = {"num_inference_steps": steps} if steps else {}
        generated = generate_features(
            pipe,
            args.num_images,
            {"features": inception, "judge": judge},
            batch_size=args.batch_size,
            keep_images=40,
            **sampling,
        )
        make_grid(uint8_to_tensor(generated["images"].numpy()), ncols=10).save(output / f"{name}.png")
        rows[f"{name} pipeline"] = scores(reference, generated["features"], generated["judge"], generated["label"])
    random_images = random_code_images(tokenizer, args.num_images, args.batch_size)
    make_grid(random_images[:40], ncols=10).save(output / "random-codes.png")
    rows["random codes"] = scores(reference, batched(inception, random_images, args.batch_size))
    print(f"reference: {reference.source}")
    print(f"| set ({args.num_images} images each) | FID | precision | recall | class consistency |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['fid']} | {row['precision']} | {row['recall']} | {row.get('class_consistency', '')} |")
    (output / "sanity.json").write_text(
        json.dumps({"pipelines": {k: str(v) for k, v in pipelines.items()}, **rows}, indent=2)
    )


if __name__ == "__main__":
    main()
