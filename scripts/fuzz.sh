#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for a time budget each on
# the nightly toolchain, and prints one line per target: executions,
# coverage, features, corpus size and crashes. Corpora grow in
# fuzz/corpus/TARGET, crashes land in fuzz/artifacts/TARGET (both ignored by
# git); logs in fuzz/logs/TARGET.log.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET ...]
#
# --seconds: budget per target (default 600); --jobs: targets run at once
# (default 1). Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=600
jobs=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

rustup toolchain list | grep -q '^nightly' || {
  echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building ${#targets[@]} targets"
for t in "${targets[@]}"; do cargo +nightly fuzz build "$t"; done
mkdir -p logs

run_one() {
  local t="$1"
  mkdir -p "corpus/$t" "artifacts/$t"
  # -fork keeps going past a crash only with -ignore_crashes; we want to stop
  # at the first one and keep its input in artifacts/.
  # A target's tokens, when fuzz/dicts has them (dicts/<target>.dict).
  local dict=()
  [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
  cargo +nightly fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 "${dict[@]}" \
    >"logs/$t.log" 2>&1 || true
}
export -f run_one
export seconds

echo "== fuzzing each target for ${seconds}s, $jobs at a time"
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'

printf '%-20s %12s %8s %8s %8s %8s\n' TARGET EXECS COV FT CORPUS CRASHES
failed=0
for t in "${targets[@]}"; do
  log="logs/$t.log"
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
  ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
  corpus=$(find "corpus/$t" -type f | wc -l)
  crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  [ "$crashes" = 0 ] || failed=1
  printf '%-20s %12s %8s %8s %8s %8s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$crashes"
done
[ "$failed" = 0 ] || echo "crashes found: see fuzz/artifacts/ and fuzz/logs/" >&2
exit "$failed"
