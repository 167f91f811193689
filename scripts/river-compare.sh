#!/usr/bin/env bash
# Issue 20: the Stratus side of "Generated streams against river" in
# docs/benchmarks.md. For each generated stream (scripts/gen-streams.sh):
#   1. MLP(32) in the anchor setup (examples/pipelines/gen-windows1000.yaml):
#      all (the all-data training cost), new_data, uniform-25, freshness-5,
#      and the stream learners hoeffding_tree, hat, arf, online_logreg;
#   2. logistic regression, the same setup, last window and freshness-5;
#   3. the drift-triggered pipeline (examples/pipelines/gen-drift.yaml:
#      ADWIN or every 5000) and hat reset by the same ADWIN.
# Prints one table a stream from the summary.json files. The river side:
# scripts/river_check.py --dir DIR sea agrawal hyperplane rbf.
#
#   scripts/river-compare.sh [STRATUS] [DIR] [STREAMS...]   (defaults:
#   target/release/stratus, /tmp/stratus-streams, sea agrawal hyperplane rbf)
set -euo pipefail
S=${1:-target/release/stratus}
DIR=${2:-/tmp/stratus-streams}
shift $(( $# > 2 ? 2 : $# ))
STREAMS=("${@:-sea agrawal hyperplane rbf}")
read -r -a STREAMS <<<"${STREAMS[*]}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for s in "${STREAMS[@]}"; do
  [ -f "$DIR/$s.csv" ] || "$ROOT/scripts/gen-streams.sh" "$S" "$DIR"
  d="$DIR/$s.runs"
  rm -rf "$d" && mkdir -p "$d"
  ln -s "$DIR/$s.csv" "$d/stream.csv"
  cp "$ROOT/examples/pipelines/gen-windows1000.yaml" "$d/mlp.yaml"
  sed -e 's/^  id: mlp$/  id: logreg/' -e '/^  hidden: \[32\]$/d' -e 's/name: gen-windows1000/name: gen-windows1000-logreg/' \
    "$ROOT/examples/pipelines/gen-windows1000.yaml" >"$d/logreg.yaml"
  cp "$ROOT/examples/pipelines/gen-drift.yaml" "$d/drift.yaml"
  "$S" train run "$d/mlp.yaml" --out "$d/mlp" \
    --strategies all,new_data,uniform:0.25,freshness:0.05,hoeffding_tree,hat,arf,online_logreg >/dev/null
  "$S" train run "$d/logreg.yaml" --out "$d/logreg" --strategies new_data,freshness:0.05 >/dev/null
  "$S" train run "$d/drift.yaml" --out "$d/drift" --strategies pipeline,hat >/dev/null
done
python3 - "$DIR" "${STREAMS[@]}" <<'PY'
import json, sys
d = sys.argv[1]
for s in sys.argv[2:]:
    rows = []
    for run in ("mlp", "logreg", "drift"):
        for r in json.load(open(f"{d}/{s}.runs/{run}/summary.json")):
            rows.append((run, r))
    base = next(r for run, r in rows if run == "mlp" and r["label"] == "all")
    print(f"## {s}")
    print("| run | strategy | triggers (drift) | prequential acc | next-window acc | training samples | CPU-s | of all's CPU-s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for run, r in rows:
        print(f"| {run} | {r['label']} | {r['triggers']} ({r['drift_triggers']}) | {r['prequential_accuracy']:.4f} "
              f"| {r['mean_next_accuracy']:.4f} | {r['train_samples']:,} | {r['cpu_s']:.2f} "
              f"| {100 * r['cpu_s'] / base['cpu_s']:.0f}% |")
    print()
PY
