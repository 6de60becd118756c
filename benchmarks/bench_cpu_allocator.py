"""CPU encode / decode of the GR d64 tokenizer (256 px, batch 4, random weights) under different allocator settings.

On CPU every activation of the full-resolution levels (4 x 64 x 256 x 256 fp32 = 64 MiB) is larger than glibc's
largest mmap threshold (32 MiB), so with the default settings each one is a fresh ``mmap``, touched page by page
(minor page faults, zeroed by the kernel) and unmapped again when it is freed. The settings compared here keep freed
memory in the heap instead. They are process settings, read when the process starts, so each variant runs in its
own child process; children of the variants alternate (A B C, C B A, ...) ``--rounds`` times so that a noisy machine
slows them alike, and each child times ``--repeats`` calls of each stage (``timing.interleaved``: encode and decode
alternate, after one untimed round)::

    python benchmarks/bench_cpu_allocator.py [--rounds 3] [--repeats 3] [--batch 4] [--resolution 256]
        [--threads 2] [--output runs/bench-cpu-allocator.json]

Variants: ``default`` (glibc as configured), ``heap`` (``MALLOC_MMAP_THRESHOLD_`` = 4 GiB,
``MALLOC_TRIM_THRESHOLD_`` = 64 GiB: freed blocks stay in the heap for reuse; the process keeps its peak memory),
``thp`` (``THP_MEM_ALLOC_ENABLE=1``: PyTorch asks for transparent huge pages on large allocations; fewer, larger
faults), and ``jemalloc`` when ``--jemalloc PATH`` names a libjemalloc.so (``LD_PRELOAD``). Reported per stage: the
median seconds per call with the interquartile range over all timed calls, the speed ratio against ``default``,
and the minor page faults per call (``getrusage``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import interleaved, summary  # noqa: E402

HEAP = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(64 << 30)}


def child(args) -> None:
    import torch

    from mergevq_hf import MergeVQConfig, MergeVQModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    grid = args.resolution // 16
    config = MergeVQConfig.from_preset("mergevq-gr-d64", resolution=args.resolution, num_tokens=min(144, grid * grid))
    model = MergeVQModel(config).eval()
    pixels = torch.rand(args.batch, 3, args.resolution, args.resolution) * 2 - 1
    faults = {"encode": [], "decode": []}

    def counting(name, fn):
        def call():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            fn()
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

        return call

    with torch.inference_mode():
        enc = model.encode(pixels)
        stages = {
            "encode": counting("encode", lambda: model.encode(pixels)),
            "decode": counting("decode", lambda: model.decode(enc.indices, enc.source)),
        }
        seconds = interleaved(stages, args.repeats)  # one untimed warm-up round first
    result = {name: {"seconds": seconds[name], "minor_faults": faults[name][1:]} for name in stages}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jemalloc", type=Path, default=None, help="path of libjemalloc.so.2 for LD_PRELOAD")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("rounds", "repeats", "batch", "resolution", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.child:
        child(args)
        return
    if args.jemalloc is not None and not args.jemalloc.is_file():
        parser.error(f"--jemalloc {args.jemalloc} is not a file")

    variants = {"default": {}, "heap": HEAP, "thp": {"THP_MEM_ALLOC_ENABLE": "1"}}
    if args.jemalloc is not None:
        variants["jemalloc"] = {"LD_PRELOAD": str(args.jemalloc)}
    base = {k: v for k, v in os.environ.items() if k not in {*HEAP, "THP_MEM_ALLOC_ENABLE", "LD_PRELOAD"}}
    forwarded = [f"--{n}={getattr(args, n)}" for n in ("repeats", "batch", "resolution", "threads")]
    runs: dict[str, dict[str, dict[str, list]]] = {name: {} for name in variants}
    names = list(variants)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", *forwarded],
                env={**base, **variants[name]},
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                raise SystemExit(f"variant {name}: child process failed ({proc.returncode}): {tail[0]}")
            out = proc.stdout
            for stage, values in json.loads(out.strip().splitlines()[-1]).items():
                for key, series in values.items():
                    runs[name].setdefault(stage, {}).setdefault(key, []).extend(series)
            print(f"round {round_index + 1}/{args.rounds} {name} done", flush=True)

    import torch

    print(
        f"\nmergevq-gr-d64, {args.resolution} px, batch {args.batch}, {args.threads} threads,"
        f" torch {torch.__version__}, {args.rounds} processes x {args.repeats} calls per variant\n"
    )
    print("| stage | variant | s per call (median, IQR) | speed vs default | minor faults per call |")
    print("|---|---|---|---|---|")
    report = {"settings": vars(args) | {"jemalloc": str(args.jemalloc)}, "variants": variants, "results": {}}
    report["settings"].pop("output")
    for stage in ("encode", "decode"):
        reference = summary(runs["default"][stage]["seconds"])["median"]
        for name in names:
            stats = summary(runs[name][stage]["seconds"])
            faults = summary(runs[name][stage]["minor_faults"])["median"]
            entry = {**stats, "minor_faults_median": faults, **runs[name][stage]}
            report["results"].setdefault(stage, {})[name] = entry
            print(
                f"| {stage} | {name} | {stats['median']:.3f} ({stats['q1']:.3f}-{stats['q3']:.3f}) |"
                f" {reference / stats['median']:.2f}x | {faults:.0f} |"
            )
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
