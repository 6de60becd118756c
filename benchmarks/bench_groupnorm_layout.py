"""GroupNorm on CPU in NCHW and in channels-last: error against float64 and time (why the tokenizer's CNN does not
run channels-last on CPU).

The CPU kernel of ``F.group_norm`` for a channels-last input loses precision when a group's mean is large next to
its spread (its variance comes out of a cancelling difference), while the NCHW kernel stays near float rounding.
A decoder kept in channels-last through its upsamplers therefore leaves the official parity contract (recon atol
1e-4) although every other op in it is exact or rounding-level. A two-pass channels-last GroupNorm written with
torch ops (``var_mean`` + ``addcmul``) is accurate but many times slower than either kernel::

    python benchmarks/bench_groupnorm_layout.py [--shape 4,64,256,256] [--groups 32] [--repeats 7] [--threads 2]

Reported: max |error| against float64 of each variant for inputs ``N(offset, 0.5)`` (offset / std = 0, 20, 200),
then seconds per call (median, IQR; variants interleaved, one untimed round) on the ``--shape`` input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import interleaved, summary  # noqa: E402


def two_pass_channels_last(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """GroupNorm of a channels-last tensor from a separate mean / variance pass (Welford ``var_mean``)."""
    batch, channels, height, width = x.shape
    nhwc = x.permute(0, 2, 3, 1)
    grouped = nhwc.reshape(batch, height * width, groups, channels // groups)
    var, mean = torch.var_mean(grouped, dim=(1, 3), correction=0, keepdim=True)
    scale = (var + eps).rsqrt() * weight.view(1, 1, groups, -1)
    shift = bias.view(1, 1, groups, -1) - mean * scale
    out = torch.addcmul(shift.reshape(batch, 1, 1, channels), nhwc, scale.reshape(batch, 1, 1, channels))
    return out.permute(0, 3, 1, 2)


def variants(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    x_cl = x.contiguous(memory_format=torch.channels_last)
    return {
        "nchw": lambda: F.group_norm(x, groups, weight, bias, eps),
        "channels_last": lambda: F.group_norm(x_cl, groups, weight, bias, eps),
        "channels_last_two_pass": lambda: two_pass_channels_last(x_cl, groups, weight, bias, eps),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="4,64,256,256", help="B,C,H,W of the timed input")
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        parser.error(f"--shape must be four comma-separated integers B,C,H,W, got {args.shape!r}")
    if len(shape) != 4 or min(shape) < 1 or shape[1] % args.groups:
        parser.error(f"--shape {args.shape!r} must be B,C,H,W (positive) with C divisible by --groups {args.groups}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    eps = 1e-6
    weight, bias = torch.randn(shape[1]), torch.randn(shape[1])
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} shape={shape} groups={args.groups}")

    errors = {}
    with torch.no_grad():
        for offset in (0.0, 10.0, 100.0):
            x = torch.randn(2, shape[1], 64, 64) * 0.5 + offset
            ref = F.group_norm(x.double(), args.groups, weight.double(), bias.double(), eps)
            errors[f"mean/std={offset / 0.5:g}"] = {
                name: (fn().double() - ref).abs().max().item()
                for name, fn in variants(x, args.groups, weight, bias, eps).items()
            }
        x = torch.randn(shape)
        times = interleaved(variants(x, args.groups, weight, bias, eps), args.repeats)
    print("max |error| vs float64: " + json.dumps(errors, indent=1))
    for name, values in times.items():
        s = summary(values)
        print(f"{name:>24}: {1e3 * s['median']:8.2f} ms (IQR {1e3 * s['q1']:.2f}-{1e3 * s['q3']:.2f}, n={s['n']})")


if __name__ == "__main__":
    main()
