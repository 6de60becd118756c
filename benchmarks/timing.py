"""Timing helpers shared by the benchmarks: variants run interleaved (A, B, A, B, ...) so that a busy, noisy
machine slows them alike, every timing is repeated, and results are the median with the interquartile range."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def synchronize(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, device="cpu", warmup: int = 1):
    """Seconds of each call, {name: [s, ...]}: ``warmup`` untimed rounds, then ``repeats`` rounds in which every
    variant runs once, in an order that alternates between rounds (A B, B A, ...)."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    synchronize(device)
    seconds = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            variants[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def summary(values: list[float]) -> dict[str, float]:
    """Median and interquartile range (q1, q3) of repeated timings."""
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0], "n": 1}
    q1, _, q3 = statistics.quantiles(values, n=4)
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "n": len(values)}


def ratio_spread(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median of the per-round ratios numerator/denominator and their interquartile range (rounds are paired:
    both variants ran back to back, so the pair shares the machine's state)."""
    return summary([a / b for a, b in zip(numerator, denominator)])


def memory_read_bandwidth(gib: float = 1.0, repeats: int = 5, device="cpu") -> float:
    """Bytes per second this machine reads: median over ``repeats`` of summing a ``gib`` GiB float32 tensor."""
    import torch

    data = torch.ones(int(gib * 2**30) // 4, device=device)
    seconds = interleaved({"sum": lambda: data.sum()}, repeats, device)["sum"]
    return data.numel() * 4 / statistics.median(seconds)
