#!/usr/bin/env bash
# The GPU figures of issue 20 in one run (benchmark limits add up to 460 s; with start-up under 8 min): the training
# step at paper sizes, ours vs the official tokenizer, the MergeAR decode step (pruned vs dense cache), MergeAR
# generation (dynamic / static / CUDA graphs) and the end-to-end pipeline images/s of the three generators at B=1 and
# B=64 with CFG. Each benchmark's stdout goes to $OUT/<name>.log; one JSON ($OUT/gpu_suite.json) holds, per
# benchmark, the command, exit status, seconds, the JSON the benchmark wrote (where it writes one) and its log. A
# failing benchmark is recorded and the suite goes on.
#
#   OUT=runs/gpu OFFICIAL=/path/to/ApexGen-X/MergeVQ-checkout bash benchmarks/gpu_suite.sh
#
# OFFICIAL (a checkout of github ApexGen-X/MergeVQ holding taming/ and configs/; never vendored) is optional: without
# it the side-by-side with the official code is skipped and says so. SUITE_SIZE=tiny runs only the pipeline and
# generation benchmarks at tiny settings (a check of the script itself, on a CPU too: DEVICE=cpu).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-suite}
DEVICE=${DEVICE:-cuda}
SIZE=${SUITE_SIZE:-paper}
mkdir -p "$OUT"
python - <<'EOF' > "$OUT/environment.log" 2>&1
import torch, transformers, accelerate
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__,
      "accelerate", accelerate.__version__)
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB")
EOF

run() {  # run NAME TIMEOUT_S CMD...: stdout+stderr to $OUT/NAME.log, status and seconds to $OUT/NAME.status
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    rm -f "$OUT/$name.json"  # a result left by an earlier run must not be reported as this run's
    echo "== $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%s %s %s\n' "$rc" "$((SECONDS - start))" "$*" > "$OUT/$name.status"
    echo "   rc=$rc in $((SECONDS - start)) s"
    tail -n 12 "$OUT/$name.log"
}

if [ "$SIZE" = tiny ]; then
    run pipeline 120 python benchmarks/bench_pipeline.py --device "$DEVICE" --size tiny --batch-sizes 1,4 \
        --repeats 2 --output-json "$OUT/pipeline.json"
    run mergear_generation 120 python benchmarks/bench_mergear_generation.py --device "$DEVICE" --images 1 --L 16 \
        --K 9 --repeats 1
else
    run training 140 python benchmarks/bench_training.py --device "$DEVICE" --repeats 3 \
        --output-json "$OUT/training.json"
    if [ -n "${OFFICIAL:-}" ]; then
        run official_tokenizer 80 python benchmarks/bench_official_tokenizer.py --official "$OFFICIAL" \
            --device "$DEVICE" --repeats 5 --variants ours,ours-compile --output "$OUT/official_tokenizer.json"
    else
        echo "== official_tokenizer: skipped (OFFICIAL is not set)"
        printf 'skipped 0 OFFICIAL not set\n' > "$OUT/official_tokenizer.status"
    fi
    run mergear 50 python benchmarks/bench_mergear.py --device "$DEVICE"
    run mergear_generation 80 python benchmarks/bench_mergear_generation.py --device "$DEVICE" --images 8 \
        --compile-mode reduce-overhead --repeats 3
    run pipeline 110 python benchmarks/bench_pipeline.py --device "$DEVICE" --size b --batch-sizes 1,64 \
        --repeats 3 --output-json "$OUT/pipeline.json"
fi

OUT="$OUT" python - <<'EOF'
import json, os
from pathlib import Path
out = Path(os.environ["OUT"])
suite = {"environment": (out / "environment.log").read_text(), "benchmarks": {}}
for status in sorted(out.glob("*.status")):
    name = status.stem
    rc, seconds, command = status.read_text().strip().split(" ", 2)
    entry = {"command": command, "rc": rc, "seconds": int(seconds)}
    log, result = out / f"{name}.log", out / f"{name}.json"
    if log.exists():
        entry["log"] = log.read_text()[-20000:]
    if result.exists():
        entry["result"] = json.loads(result.read_text())
    suite["benchmarks"][name] = entry
(out / "gpu_suite.json").write_text(json.dumps(suite, indent=1))
print("wrote", out / "gpu_suite.json", {k: v["rc"] for k, v in suite["benchmarks"].items()})
EOF
