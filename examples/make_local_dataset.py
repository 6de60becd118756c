"""Write a small REAL image dataset (offline) from pictures that pip packages ship.

    python examples/make_local_dataset.py --kind photos --output data/photos32 --size 32 --num-per-image 64
    python examples/make_local_dataset.py --kind digits --output data/digits32 --format imagefolder

photos: random crops of scikit-image's sample photos (label = photo); digits: sklearn's 8x8 handwritten digits,
upsampled (label = digit). Writes `train` and `test` splits; load them with
`DataConfig(dataset="data/photos32", split="train")` (see mergevq_hf.testing.build_local_dataset).
"""

from __future__ import annotations

import argparse

from mergevq_hf.testing import LOCAL_FORMATS, LOCAL_KINDS, build_local_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=LOCAL_KINDS, required=True)
    parser.add_argument("--output", required=True, help="folder to write (must be empty unless --overwrite)")
    parser.add_argument("--size", type=int, default=32, help="side of the square images in pixels")
    parser.add_argument("--num-per-image", type=int, default=64, help="crops per photo / at most this many per digit")
    parser.add_argument("--format", choices=LOCAL_FORMATS, default="parquet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout-fraction", type=float, default=0.1, help="fraction of each class put in `test`")
    parser.add_argument("--num-shards", type=int, default=1, help="parquet files per split")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --output")
    args = parser.parse_args(argv)
    counts = build_local_dataset(
        args.kind,
        args.output,
        size=args.size,
        num_per_image=args.num_per_image,
        format=args.format,
        seed=args.seed,
        holdout_fraction=args.holdout_fraction,
        num_shards=args.num_shards,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.kind} ({args.format}) to {args.output}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
