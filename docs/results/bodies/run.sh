#!/usr/bin/env bash
# One large invoke timed with curl: `stratus up` on 127.0.0.1:18080 with a
# `bench` function (empty reply) that reads its whole body; 5 warm-up
# invokes, then 25 timed. Prints p50/min/max and the gateway's peak RSS.
# usage: run.sh DIR_WITH_A_STRATUS_BINARY LABEL BODY_FILE
# (the directory goes first in PATH: instances run `stratus fn bench`)
set -euo pipefail
dir=$(realpath "$1"); label=$2; body=$(realpath "$3")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/svc.yaml" <<'YAML'
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: sink
spec:
  template:
    spec:
      containers:
        - image: stratus.dev/test/bench
          command: ["stratus", "fn", "bench"]
YAML
export PATH="$dir:$PATH"
stratus up --addr 127.0.0.1:18080 --state-dir "$work/state" --max-body-bytes 100000000 > "$work/up.log" 2>&1 &
up=$!
for _ in $(seq 50); do [ -s "$work/state/admin.token" ] && break; sleep 0.1; done
tok=$(cat "$work/state/admin.token")
STRATUS_GATEWAY=http://127.0.0.1:18080 STRATUS_TOKEN=$tok stratus deploy -f "$work/svc.yaml" > /dev/null
call() { curl -s -o /dev/null -w "$1" -H "authorization: Bearer $tok" \
  -H "content-type: application/octet-stream" --data-binary @"$body" \
  http://127.0.0.1:18080/v1/invoke/sink; }
for _ in $(seq 5); do call "%{http_code} "; done; echo
for _ in $(seq 25); do call "%{time_total}\n"; done | sort -n |
  awk -v l="$label" '{a[NR]=$1} END {printf "%s p50 %.1f ms, min %.1f, max %.1f\n", l, a[int((NR+1)/2)]*1e3, a[1]*1e3, a[NR]*1e3}'
grep VmHWM "/proc/$up/status"
kill "$up"; wait "$up" 2>/dev/null || true
