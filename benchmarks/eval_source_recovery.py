"""Source recovery as in paper Table 5: train a SourceRecoveryModel on a frozen tokenizer's K tokens, then
decode held-out images with predicted sources vs true sources (PSNR), and report position accuracy.

    python benchmarks/eval_source_recovery.py --data data/digits --tokenizer runs/tok/final --num-tokens 36 \
        --steps 600 --output runs/source_recovery
"""

from __future__ import annotations

import argparse
import json

import torch

from mergevq_hf import MergeVQModel, SourceRecoveryConfig, SourceRecoveryModel
from mergevq_hf.image_utils import psnr
from mergevq_hf.training.data import load_split_tensors


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--num-tokens", type=int, default=36)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="save the trained SourceRecoveryModel here")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    tokenizer = MergeVQModel.from_pretrained(args.tokenizer).eval()
    size, k = tokenizer.config.resolution, args.num_tokens
    with torch.no_grad():
        train_enc = tokenizer.encode(load_split_tensors(args.data, "train", size)[0], num_tokens=k)
        test_pixels = load_split_tensors(args.data, "test", size)[0]
        test_enc = tokenizer.encode(test_pixels, num_tokens=k)
    config = SourceRecoveryConfig(
        code_dim=tokenizer.config.code_dim,
        num_positions=tokenizer.config.num_positions,
        dim=args.dim,
        num_heads=4,
        num_layers=2,
    )
    recovery = SourceRecoveryModel(config)
    optimizer = torch.optim.AdamW(recovery.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    num_train = train_enc.indices.shape[0]
    curve = []
    for step in range(1, args.steps + 1):
        rows = torch.randint(0, num_train, (args.batch_size,), generator=generator)
        loss = recovery(train_enc.quantized[rows], source=train_enc.source[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            recovery.eval()
            with torch.no_grad():
                accuracy = (recovery.predict_source(test_enc.quantized) == test_enc.source).float().mean()
            recovery.train()
            curve.append(
                {"step": step, "loss": round(loss.item(), 4), "heldout_position_accuracy": round(float(accuracy), 4)}
            )
    recovery.eval()
    with torch.no_grad():
        predicted = recovery.predict_source(test_enc.quantized)
        true_decode = tokenizer.decode(test_enc.indices, source=test_enc.source)
        pred_decode = tokenizer.decode(test_enc.indices, source_recovery=recovery)
        largest = torch.nn.functional.one_hot(test_enc.source, k).sum(1).argmax(1, keepdim=True)
    baseline = (test_enc.source == largest).float().mean()
    if args.output:
        recovery.save_pretrained(args.output)
    print(
        json.dumps(
            {
                "K": k,
                "L": tokenizer.config.num_positions,
                "heldout_images": test_pixels.shape[0],
                "position_accuracy": round(float((predicted == test_enc.source).float().mean()), 4),
                "baseline_largest_group_accuracy": round(float(baseline), 4),
                "psnr_true_source": round(float(psnr(true_decode, test_pixels).mean()), 3),
                "psnr_predicted_source": round(float(psnr(pred_decode, test_pixels).mean()), 3),
                "curve": curve,
            }
        )
    )


if __name__ == "__main__":
    main()
