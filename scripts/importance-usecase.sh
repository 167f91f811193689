#!/usr/bin/env bash
# Issue 20, item 7: importance selection (loss, gradnorm, uncertainty
# margin) against uniform and recency (new_data, freshness) at equal budget
# on generated streams (Agrawal at 1% and 2.5% budgets; class-imbalanced,
# label-noisy and drifting streams at 5%), 3 or 5 seeds each; prints the
# median next-window accuracy per strategy. About 10 minutes on 2 cores.
#
#   scripts/importance-usecase.sh [STRATUS] [OUT]   (defaults:
#   target/release/stratus, /tmp/importance-usecase)
#
# Each case: `stratus data gen` writes the stream for seed S, the pipeline
# examples/pipelines/agrawal-importance.yaml is copied with the dataset,
# the training seed and the case's settings replaced, and `stratus train
# run` runs it. Needs python3 for the medians.
set -euo pipefail
S=${1:-target/release/stratus}
OUT=${2:-/tmp/importance-usecase}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
B=all,new_data
imp() { echo "uniform:$1,freshness:$1,loss:$1,gradnorm:$1,uncertainty_margin:$1"; }
# name | seeds | strategies | generator arguments
CASES=(
  "agrawal-2.5|1 2 3 4 5|$B,$(imp 0.025),uniform:0.05,uniform:0.1|agrawal --samples 20000 --perturbation 0.05"
  "agrawal-1|1 2 3 4 5|$(imp 0.01),uniform:0.025|agrawal --samples 20000 --perturbation 0.05"
  "agrawal-imbalanced-5|1 2 3|$B,$(imp 0.05)|agrawal --samples 20000 --class-weights 1,0.1 --perturbation 0.05"
  "rbf-imbalanced-5|1 2 3|$B,$(imp 0.05)|rbf --samples 20000 --features 10 --classes 5 --centroids 50 --class-weights 1,1,1,1,0.1"
  "rbf-imbalanced-noisy-5|1 2 3|$B,$(imp 0.05)|rbf --samples 20000 --features 10 --classes 5 --centroids 50 --class-weights 1,1,1,1,0.1 --noise 0.1"
  "sea-imbalanced-drift-5|1 2 3|$B,$(imp 0.05)|sea --samples 20000 --drift-at 5000,10000,15000 --class-weights 1,0.1"
)
for c in "${CASES[@]}"; do
  IFS='|' read -r name seeds strats gen <<<"$c"
  for seed in $seeds; do
    d="$OUT/$name/s$seed"
    rm -rf "$d" && mkdir -p "$d"
    # shellcheck disable=SC2086
    "$S" data gen $gen --seed "$seed" -o "$d/stream.csv" >/dev/null
    sed -e "s#dataset: agrawal-importance.csv#dataset: stream.csv#" \
        -e "s/^  seed: 1$/  seed: $seed/" \
        "$ROOT/examples/pipelines/agrawal-importance.yaml" >"$d/pipeline.yaml"
    "$S" train run "$d/pipeline.yaml" --out "$d/report" --strategies "$strats" >/dev/null
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys, glob, os
out = sys.argv[1]
for case in sorted(os.listdir(out)):
    runs = sorted(glob.glob(f"{out}/{case}/s*/report/summary.json"))
    if not runs:
        continue
    rows = {}
    for path in runs:
        for r in json.load(open(path)):
            rows.setdefault(r["label"], []).append(r)
    seeds = ", ".join(p.split("/")[-3][1:] for p in runs)
    print(f"## {case} (seeds {seeds}; medians)")
    print("| strategy | next-window acc | per seed | training samples | CPU-s | energy (J) |")
    print("|---|---:|---|---:|---:|---:|")
    for label, v in rows.items():
        m = lambda f: statistics.median(x[f] for x in v)
        per = ", ".join(f"{x['mean_next_accuracy']:.4f}" for x in v)
        print(f"| {label} | {m('mean_next_accuracy'):.4f} | {per} | {m('train_samples'):,.0f} | {m('cpu_s'):.2f} | {m('energy_j'):.1f} |")
    print()
PY
