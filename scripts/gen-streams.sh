#!/usr/bin/env bash
# The four generated drift streams of docs/benchmarks.md, "Generated streams
# against river (issue 20)": 100,000 samples each, seed 1, written with
# `stratus data gen` (the files are regenerated, not committed).
#
#   scripts/gen-streams.sh [STRATUS] [DIR]   (defaults: target/release/stratus,
#   /tmp/stratus-streams); writes DIR/{sea,agrawal,hyperplane,rbf}.csv
#
# - sea: SEA concepts 0-3 (θ = 8, 9, 7, 9.5), abrupt drifts every 25,000
#   samples, 10% label noise (Street & Kim 2001; the ARF paper's SEA_a).
# - agrawal: functions F1-F4, gradual drifts (width 5,000) centred at 25,000,
#   50,000 and 75,000, 5% feature perturbation (the ARF paper's AGR_g shape).
# - hyperplane: 10 features, 2 drifting, magnitude 0.001 a sample, 5% noise
#   (incremental drift; the ARF paper's HYPER_f).
# - rbf: Random RBF, 10 features, 5 classes, 50 centroids all moving at
#   speed 0.001 (incremental drift; the ARF paper's RBF_f).
set -euo pipefail
S=${1:-target/release/stratus}
DIR=${2:-/tmp/stratus-streams}
mkdir -p "$DIR"
"$S" data gen sea --samples 100000 --seed 1 --drift-at 25000,50000,75000 --noise 0.1 -o "$DIR/sea.csv"
"$S" data gen agrawal --samples 100000 --seed 1 --drift-at 25000,50000,75000 --drift-width 5000 \
  --perturbation 0.05 -o "$DIR/agrawal.csv"
"$S" data gen hyperplane --samples 100000 --seed 1 --features 10 --drift-features 2 --mag-change 0.001 \
  -o "$DIR/hyperplane.csv"
"$S" data gen rbf --samples 100000 --seed 1 --features 10 --classes 5 --centroids 50 --drift-centroids 50 \
  --change-speed 0.001 -o "$DIR/rbf.csv"
