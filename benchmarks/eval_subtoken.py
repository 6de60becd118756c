"""Independent factor heads vs next-sub-token prediction (issue 19 item 4), same data, steps and seed.

On a local dataset (sklearn digits or scikit-image photo crops, 32 px, 30% held out) the embedded 8-bit tokenizer
of that kind writes K=36 code maps; the raster baseline (MergeAR without duplicate masking, 128 hidden, 4 layers)
is trained twice with the codes split 3 + 5 bits: ``factorized_num_layers=0`` (p(code) = p(f0) p(f1)) and ``2``
(the official intra-token blocks, f1 given f0). Reported per variant: held-out NLL in bits per code (the
evaluation-mode loss / ln 2: exact, both factors), and FID / precision / recall of ``--num-images`` sampled images
(CFG 2.0, temperature 1) against the train split's Inception features, next to the real held-out images.

    python benchmarks/eval_subtoken.py --kind digits --output runs/subtoken-digits
    python benchmarks/eval_subtoken.py --kind photos --output runs/subtoken-photos

Each stage is skipped when its output exists (data, codes, trained runs), so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import train_generator  # noqa: E402
from eval_generation_sanity import scores  # noqa: E402  (FID / precision / recall of features, as there)
from mergevq_hf import MergeARForCausalLM, MergeVQModel, MergeVQPipeline  # noqa: E402
from mergevq_hf.defaults import DEFAULT_PIPELINE_DIR, DEFAULT_TOKENIZER_DIR  # noqa: E402
from mergevq_hf.evaluation import InceptionFeatures  # noqa: E402
from mergevq_hf.evaluation.generation import evaluate_generation  # noqa: E402
from mergevq_hf.evaluation.reference import FIDReference  # noqa: E402
from mergevq_hf.testing import build_local_dataset  # noqa: E402
from mergevq_hf.training.codes import load_codes  # noqa: E402
from mergevq_hf.training.data import DataConfig  # noqa: E402

TOKENIZERS = {"digits": DEFAULT_PIPELINE_DIR / "tokenizer", "photos": DEFAULT_TOKENIZER_DIR}
VARIANTS = {"independent": 0, "next-sub-token": 2}
BODY = {"num_classes": 10, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4}


def prepare_codes(kind: str, output: Path) -> tuple[Path, Path]:
    data, codes = output / "data", output / "codes"
    if not data.exists():
        build_local_dataset(kind, data, size=32, num_per_image=200 if kind == "digits" else 100, holdout_fraction=0.3)
    tokenizer = str(TOKENIZERS[kind])
    for split in ("train", "test"):
        if not list(codes.glob(f"{split}-*.parquet")):
            command = ["mergevq", "extract-codes", "--tokenizer", tokenizer, "--dataset", str(data), "--split", split]
            command += ["--output-split", split, "--output", str(codes), "--sampler", "fixed", "--base", "6"]
            subprocess.run(command, check=True)
    return data, codes


@torch.no_grad()
def held_out_bits_per_code(model: MergeARForCausalLM, codes: Path) -> float:
    """Mean NLL of the held-out codes (all L per image, both factors), in bits."""
    model.eval()
    test = load_codes(codes, "test")
    total, count = 0.0, 0
    for start in range(0, len(test), 100):
        rows = test[start : start + 100]
        labels = rows["label"].masked_fill(rows["label"] < 0, model.config.num_classes)
        loss = model(**model.training_inputs(rows["codes"], labels, rows["num_tokens"])).loss
        total, count = total + float(loss) * len(labels), count + len(labels)
    return total / count / math.log(2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=sorted(TOKENIZERS), required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--max-steps", type=int, default=800)
    parser.add_argument("--num-images", type=int, default=500)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    output = Path(args.output)
    data, codes = prepare_codes(args.kind, output)
    inception = InceptionFeatures()
    reference = FIDReference.from_dataset(
        DataConfig(dataset=str(data), split="train", label_column=None, resolution=32),
        inception,
        cache=output / "reference-train.npz",
    )
    held_out = FIDReference.from_dataset(
        DataConfig(dataset=str(data), split="test", label_column=None, resolution=32),
        inception,
        max_images=args.num_images,
    )
    real = scores(reference, held_out.features)
    rows = {f"real held-out {args.kind}": {"bits_per_code": None, "train_minutes": None, **real}}
    tokenizer = MergeVQModel.from_pretrained(TOKENIZERS[args.kind]).eval()
    for name, layers in VARIANTS.items():
        run = output / name
        started = time.perf_counter()
        if not (run / "final" / "config.json").exists():
            overrides = {**BODY, "factorized_bits": [3, 5], "factorized_num_layers": layers}
            train_generator.main(
                ["--arch", "raster", "--codes", str(codes), "--output-dir", str(run), "--preset", "tiny-factorized"]
                + ["--batch-size", "64", "--config-overrides", json.dumps(overrides), "--seed", str(args.seed)]
                + ["--max-steps", str(args.max_steps), "--lr", "1e-3", "--lr-drop-steps", str(args.max_steps * 4 // 5)]
                + ["--save-every", str(args.max_steps), "--log-every", "50"]
            )
            minutes = round((time.perf_counter() - started) / 60, 1)
            (run / "train_minutes.txt").write_text(str(minutes))
        minutes = float((run / "train_minutes.txt").read_text()) if (run / "train_minutes.txt").exists() else None
        generator = MergeARForCausalLM.from_pretrained(run / "final").eval()
        generator.config.id2label = {i: str(i) for i in range(10)}
        bits = held_out_bits_per_code(generator, codes)
        pipe = MergeVQPipeline(tokenizer, generator)
        pipe.set_progress_bar_config(disable=True)
        result = evaluate_generation(
            pipe,
            reference,
            num_images=args.num_images,
            batch_size=50,
            seed=args.seed,
            inception=inception,
            grid_path=output / f"{name}.png",
            grid_images=40,
            guidance_scale=args.guidance_scale,
            num_tokens=36,
        )
        rows[name] = {
            "bits_per_code": round(bits, 4),
            "train_minutes": minutes,
            "fid": round(result["gfid"], 3),
            "precision": round(result["precision"], 4),
            "recall": round(result["recall"], 4),
        }
    print(f"{args.kind}: {args.max_steps} steps, seed {args.seed}, {args.num_images} images, CFG {args.guidance_scale}")
    print("| variant | held-out bits/code | FID | precision | recall | train min |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        cells = [row[key] for key in ("bits_per_code", "fid", "precision", "recall", "train_minutes")]
        print(f"| {name} | " + " | ".join(str(cell) for cell in cells) + " |")
    (output / "subtoken.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
