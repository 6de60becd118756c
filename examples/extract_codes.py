"""Encode a streamed image dataset with a MergeVQ tokenizer into a stage-2 code dataset (parquet).

    python examples/extract_codes.py --tokenizer runs/tokenizer --dataset ILSVRC/imagenet-1k --output data/codes \
        --sampler gaussian --base 12            # K = (12 + T)^2 per sample, or --sampler fixed --base 12 (K=144)

The same as ``mergevq extract-codes``. Local data: ``--dataset path/to/parquet_or_imagefolder``.
"""

from __future__ import annotations

import sys

from mergevq_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract-codes", *sys.argv[1:]]))
