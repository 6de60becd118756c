"""Class-conditional generation quality on the local digits data, judged by an independent classifier.

A scikit-learn classifier is trained on real digits (the train split of the local dataset, pooled back to
8x8 as in ``sklearn.datasets.load_digits``). It then reports: its accuracy on real held-out digits, on the
tokenizer's reconstructions of them, and how often it recognises the requested class in images generated
by MergeAR + the tokenizer.

    python benchmarks/eval_digits_generation.py --data data/digits --tokenizer runs/tok/final \
        --generator runs/ar/final --num-tokens 36 --per-class 20 --guidance-scale 2.0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from mergevq_hf import MergeARForCausalLM, MergeVQModel
from mergevq_hf.image_utils import make_grid
from mergevq_hf.models.mergear import generate_codes
from mergevq_hf.training.data import load_split_tensors


def to_features(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> [B, 64] grey 8x8 on the 0..16 scale of load_digits."""
    grey = images.clamp(-1, 1).mean(1, keepdim=True)
    pooled = F.adaptive_avg_pool2d(grey, 8)
    return ((pooled + 1) * 8).flatten(1).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--generator", required=True)
    p.add_argument("--num-tokens", type=int, default=36)
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--guidance-scale", type=float, default=2.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default="digits_generated.png")
    args = p.parse_args(argv)

    tokenizer = MergeVQModel.from_pretrained(args.tokenizer).eval()
    generator = MergeARForCausalLM.from_pretrained(args.generator).eval()
    size = tokenizer.config.resolution
    train_x, train_y = load_split_tensors(args.data, "train", size)
    test_x, test_y = load_split_tensors(args.data, "test", size)
    classifier = LogisticRegression(max_iter=5000).fit(to_features(train_x), train_y.numpy())

    with torch.no_grad():
        enc = tokenizer.encode(test_x, num_tokens=args.num_tokens)
        recon = tokenizer.decode(tokenizer.unmerge(enc.indices, enc.source))
        labels = torch.arange(10).repeat_interleave(args.per_class)
        generators = [torch.Generator().manual_seed(args.seed + i) for i in range(len(labels))]
        codes = generate_codes(
            generator,
            labels,
            args.num_tokens,
            guidance_scale=args.guidance_scale,
            temperature=args.temperature,
            top_k=args.top_k,
            generators=generators,
        )
        images = tokenizer.decode(codes).clamp(-1, 1)
    real_acc = float((classifier.predict(to_features(test_x)) == test_y.numpy()).mean())
    recon_acc = float((classifier.predict(to_features(recon)) == test_y.numpy()).mean())
    gen_acc = float((classifier.predict(to_features(images)) == labels.numpy()).mean())
    order = torch.arange(len(labels)).view(10, args.per_class)[:, : min(args.per_class, 10)].T.flatten()
    make_grid(images[order], ncols=10).resize((10 * 4 * (size + 2), min(args.per_class, 10) * 4 * (size + 2))).save(
        args.grid
    )
    print(
        json.dumps(
            {
                "classifier_accuracy_real_heldout": round(real_acc, 4),
                "classifier_accuracy_reconstructed_heldout": round(recon_acc, 4),
                "generated_recognised_as_requested": round(gen_acc, 4),
                "num_generated": len(labels),
                "num_tokens": args.num_tokens,
                "guidance_scale": args.guidance_scale,
                "temperature": args.temperature,
                "grid": str(Path(args.grid).resolve()),
            }
        )
    )


if __name__ == "__main__":
    main()
