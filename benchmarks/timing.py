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


def _release_freed_heap() -> None:
    """Hand memory that malloc keeps after frees back to the OS (glibc ``malloc_trim``), so that the resident set
    before a measured call is what is live, not what earlier calls left cached."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _resident_high_water_mark() -> int | None:
    """Peak resident set size (bytes) since the last reset, from /proc/self/status (Linux), else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_resident_high_water_mark() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _resident_high_water_mark() is not None


def peak_memory(fn: Callable[[], object], device="cpu", interval: float = 0.0005) -> tuple[object, int]:
    """Run ``fn()`` once; return (its result, peak memory growth in bytes during the call).

    CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before the call. CPU: growth of the process's
    resident set above its level before the call (freed heap memory is trimmed first): the kernel's exact
    high-water mark (VmHWM, reset through /proc/self/clear_refs) where Linux allows it, else psutil samples every
    ``interval`` seconds from a thread (a lower bound: a spike shorter than the interval can be missed)."""
    import gc
    import threading

    import torch

    gc.collect()
    if getattr(device, "type", str(device)).startswith("cuda"):
        synchronize("cuda")
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn()
        synchronize("cuda")
        return result, torch.cuda.max_memory_allocated() - base
    import psutil

    process = psutil.Process()
    _release_freed_heap()
    if _reset_resident_high_water_mark():
        base = process.memory_info().rss
        result = fn()
        return result, max(_resident_high_water_mark() - base, 0)
    samples, done = [], threading.Event()

    def sample_rss():
        while not done.is_set():
            samples.append(process.memory_info().rss)
            time.sleep(interval)

    base = process.memory_info().rss
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    samples.append(process.memory_info().rss)
    return result, max(max(samples) - base, 0)


def memory_read_bandwidth(gib: float = 1.0, repeats: int = 5, device="cpu") -> float:
    """Bytes per second this machine reads: median over ``repeats`` of summing a ``gib`` GiB float32 tensor."""
    import torch

    data = torch.ones(int(gib * 2**30) // 4, device=device)
    seconds = interleaved({"sum": lambda: data.sum()}, repeats, device)["sum"]
    return data.numel() * 4 / statistics.median(seconds)
