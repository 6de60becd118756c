"""Source recovery as in paper Table 5: decode held-out images with the source a SourceRecoveryModel predicts
from the K tokens (+ their positions) vs the true source (PSNR), and the fraction of positions assigned to the
right token. The tokens are presented in a random order, as a random-order generator produces them.

    python benchmarks/eval_source_recovery.py --data data/digits --tokenizer TOKENIZER_DIR --recovery RECOVERY_DIR \
        --num-tokens 36
"""

from __future__ import annotations

import argparse
import json

import torch

from mergevq_hf import MergeVQModel, SourceRecoveryModel
from mergevq_hf.image_utils import psnr
from mergevq_hf.training.data import load_split_tensors


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--recovery", required=True, help="SourceRecoveryModel folder")
    p.add_argument("--num-tokens", type=int, action="append", help="K (repeatable; default: the tokenizer's)")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    tokenizer = MergeVQModel.from_pretrained(args.tokenizer).eval()
    recovery = SourceRecoveryModel.from_pretrained(args.recovery).eval()
    pixels = load_split_tensors(args.data, args.split, tokenizer.config.resolution)[0]
    generator = torch.Generator().manual_seed(args.seed)
    results = []
    for k in args.num_tokens or [tokenizer.config.num_tokens]:
        with torch.no_grad():
            enc = tokenizer.encode(pixels, num_tokens=k)
            positions = tokenizer.representative_positions(enc.source, k)
            order = torch.rand(enc.indices.shape, generator=generator).argsort(1)  # any order: columns follow
            tokens, positions = enc.indices.gather(1, order), positions.gather(1, order)
            true_source = order.argsort(1).gather(1, enc.source)  # the true source in the shuffled order
            extra = {"positions": positions} if recovery.config.use_positions else {}
            predicted = recovery.predict_source(tokenizer.indices_to_quantized(tokens), **extra)
            true_decode = tokenizer.decode(tokens, source=true_source).clamp(-1, 1)
            pred_decode = tokenizer.decode(tokens, source=predicted).clamp(-1, 1)
            largest = torch.nn.functional.one_hot(true_source, k).sum(1).argmax(1, keepdim=True)
        results.append(
            {
                "K": k,
                "position_accuracy": round(float((predicted == true_source).float().mean()), 4),
                "baseline_largest_group_accuracy": round(float((true_source == largest).float().mean()), 4),
                "psnr_true_source": round(float(psnr(true_decode, pixels).mean()), 3),
                "psnr_predicted_source": round(float(psnr(pred_decode, pixels).mean()), 3),
            }
        )
    print(
        json.dumps(
            {
                "data": args.data,
                "split": args.split,
                "images": pixels.shape[0],
                "L": tokenizer.config.num_positions,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
