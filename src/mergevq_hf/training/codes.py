"""Stage-2 data: encode images into MergeVQ code maps and store them as a ``datasets`` parquet dataset.

Columns (one dataset serves every generator kind):

* ``codes``: L ints, the per-position code map ``codes_L`` (MergeAR and the raster baseline);
* ``tokens``: the K merged codes in the encoder's kept-token order; ``positions``: K ints, the raster position of
  each (first position of its merge group); ``source``: L ints, the group id of every position (random-order
  generator and source recovery);
* ``num_tokens``: K used to encode; ``label``: class id, -1 when unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from ..models.tokenizer import MergeVQModel
from .merge_sampling import MergeRatioSampler

COLUMNS = ("codes", "tokens", "positions", "source", "num_tokens", "label")


@torch.no_grad()
def encode_examples(tokenizer: MergeVQModel, pixel_values: torch.Tensor, num_tokens: torch.Tensor) -> dict:
    """Per-sample K -> ``codes`` [B, L] tensor and lists of ``tokens`` / ``positions`` (K each) and ``source``
    (L each); samples sharing a K are encoded together."""
    batch = pixel_values.shape[0]
    codes = torch.empty(batch, tokenizer.config.num_positions, dtype=torch.long)
    tokens, positions, source = [None] * batch, [None] * batch, [None] * batch
    for k in num_tokens.unique().tolist():
        rows = (num_tokens == k).nonzero().squeeze(1)
        enc = tokenizer.encode(pixel_values[rows], num_tokens=int(k))
        codes[rows] = tokenizer.unmerge(enc.indices, enc.source).cpu()
        first = tokenizer.representative_positions(enc.source, int(k)).cpu()
        for i, row in enumerate(rows.tolist()):
            tokens[row] = enc.indices[i].tolist()
            positions[row] = first[i].tolist()
            source[row] = enc.source[i].tolist()
    return {"codes": codes, "tokens": tokens, "positions": positions, "source": source}


def position_counts(dataset, num_positions: int) -> torch.Tensor:
    """[L + 1, L] float: how often each position carries a token, per K, over a code dataset (the position prior
    of ``RandomARForCausalLM.set_position_prior``)."""
    counts = torch.zeros(num_positions + 1, num_positions)
    for row in dataset.select_columns(["num_tokens", "positions"]).with_format(None):
        counts[row["num_tokens"]].index_add_(0, torch.as_tensor(row["positions"]), torch.ones(len(row["positions"])))
    return counts


def pad_tokens(batch: list[dict]) -> dict[str, torch.Tensor]:
    """DataLoader collate for code datasets: stacks fixed-size columns and pads ``tokens`` / ``positions``
    (K varies per sample) to the largest K of the batch with zeros (``num_tokens`` says how many are real)."""
    out = {}
    for name in batch[0]:
        values = [torch.as_tensor(example[name]) for example in batch]
        if name in ("tokens", "positions"):
            out[name] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True)
        else:
            out[name] = torch.stack(values)
    return out


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
    rows: dict[str, list] = {name: [] for name in COLUMNS}
    written, shard = 0, 0

    def flush():
        nonlocal shard, rows
        if rows["codes"]:
            datasets.Dataset.from_dict(rows).to_parquet(str(output / f"{split}-{shard:05d}.parquet"))
            shard += 1
            rows = {name: [] for name in COLUMNS}

    progress = tqdm(total=max_examples, desc="extract codes", unit="img")
    for batch in batches:
        pixels = batch["pixel_values"]
        if max_examples is not None:
            pixels = pixels[: max_examples - written]
        ks = sampler.sample(pixels.shape[0], generator=generator, step=written)
        encoded = encode_examples(tokenizer, pixels.to(device), ks)
        labels = torch.as_tensor(batch.get("label", torch.full((len(pixels),), -1)))[: len(pixels)]
        rows["codes"] += encoded["codes"].tolist()
        for name in ("tokens", "positions", "source"):
            rows[name] += encoded[name]
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
