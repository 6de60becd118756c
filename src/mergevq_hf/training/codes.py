"""Stage-2 data: encode images into MergeVQ code maps and store them as a ``datasets`` parquet dataset.

Columns: ``codes`` (L ints, the per-position code map ``codes_L``), ``num_tokens`` (K used to encode),
``label`` (class id, -1 when unknown).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from ..models.tokenizer import MergeVQModel
from .merge_sampling import MergeRatioSampler


@torch.no_grad()
def encode_code_maps(tokenizer: MergeVQModel, pixel_values: torch.Tensor, num_tokens: torch.Tensor) -> torch.Tensor:
    """codes_L [B, L] for per-sample K (samples sharing a K are encoded together)."""
    codes = torch.empty(pixel_values.shape[0], tokenizer.config.num_positions, dtype=torch.long)
    for k in num_tokens.unique().tolist():
        rows = (num_tokens == k).nonzero().squeeze(1)
        enc = tokenizer.encode(pixel_values[rows], num_tokens=int(k))
        codes[rows] = tokenizer.unmerge(enc.indices, enc.source).cpu()
    return codes


def extract_codes(
    tokenizer: MergeVQModel,
    batches: Iterable[dict],
    output_dir: str | Path,
    sampler: MergeRatioSampler,
    max_examples: int | None = None,
    seed: int = 0,
    split: str = "train",
    shard_size: int = 50_000,
) -> int:
    """Encode ``batches`` ({"pixel_values", "label"}) and write ``output_dir/{split}-NNNNN.parquet`` shards.
    Returns the number of examples written."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    device = next(tokenizer.parameters()).device
    rows: dict[str, list] = {"codes": [], "num_tokens": [], "label": []}
    written, shard = 0, 0

    def flush():
        nonlocal shard, rows
        if rows["codes"]:
            datasets.Dataset.from_dict(rows).to_parquet(str(output / f"{split}-{shard:05d}.parquet"))
            shard += 1
            rows = {"codes": [], "num_tokens": [], "label": []}

    progress = tqdm(total=max_examples, desc="extract codes", unit="img")
    for batch in batches:
        pixels = batch["pixel_values"]
        if max_examples is not None:
            pixels = pixels[: max_examples - written]
        ks = sampler.sample(pixels.shape[0], generator=generator, step=written)
        codes = encode_code_maps(tokenizer, pixels.to(device), ks)
        labels = torch.as_tensor(batch.get("label", torch.full((len(pixels),), -1)))[: len(pixels)]
        rows["codes"] += codes.tolist()
        rows["num_tokens"] += ks.tolist()
        rows["label"] += labels.tolist()
        written += len(pixels)
        progress.update(len(pixels))
        if len(rows["codes"]) >= shard_size:
            flush()
        if max_examples is not None and written >= max_examples:
            break
    flush()
    progress.close()
    return written


def load_codes(path: str | Path, split: str = "train") -> datasets.Dataset:
    """The parquet code dataset written by :func:`extract_codes`, as torch tensors."""
    files = sorted(str(p) for p in Path(path).glob(f"{split}-*.parquet"))
    if not files:
        raise ValueError(f"no {split}-*.parquet files under {path} (write them with extract_codes)")
    dataset = datasets.load_dataset("parquet", data_files={split: files}, split=split)
    return dataset.with_format("torch")
