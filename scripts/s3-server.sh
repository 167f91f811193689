#!/usr/bin/env bash
# A real S3-compatible server (s3s-fs) for the snapstore tests.
#
#   scripts/s3-server.sh install        build s3s-fs once (about 5 min on 2 cores) into
#                                       ${CARGO_TARGET_DIR:-target}/tools/ and print its path
#   scripts/s3-server.sh path           print the path if installed (exit 1 if not)
#   scripts/s3-server.sh start DIR [PORT] [ACCESS_KEY SECRET_KEY]
#                                       start it on 127.0.0.1 (a free port if none given) serving
#                                       buckets as folders of DIR; prints "PID PORT"; stop with kill PID
#
# The tests find the binary through STRATUS_S3S_FS or the install path and start their own
# server per test on a free port with a temporary root.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.14.1   # 0.17 needs a newer rustc than these machines have
tools="${CARGO_TARGET_DIR:-target}/tools"
root="$tools/s3s-fs-$version"
bin="$root/bin/s3s-fs"

case "${1:-}" in
  install)
    if [ ! -x "$bin" ]; then
      mkdir -p "$tools"
      echo "building s3s-fs $version into $root (once per machine)" >&2
      cargo install "s3s-fs@$version" --features binary --locked --root "$root" >&2
    fi
    echo "$(cd "$(dirname "$bin")" && pwd)/s3s-fs"
    ;;
  path)
    [ -x "$bin" ] || { echo "s3s-fs not installed: run $0 install" >&2; exit 1; }
    echo "$(cd "$(dirname "$bin")" && pwd)/s3s-fs"
    ;;
  start)
    dir="${2:?usage: $0 start DIR [PORT] [ACCESS_KEY SECRET_KEY]}"
    port="${3:-}"
    [ -x "$bin" ] || { echo "s3s-fs not installed: run $0 install" >&2; exit 1; }
    if [ -z "$port" ]; then
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    fi
    mkdir -p "$dir"
    keys=()
    if [ $# -ge 5 ]; then keys=(--access-key "$4" --secret-key "$5"); fi
    "$bin" --host 127.0.0.1 --port "$port" "${keys[@]}" "$dir" >"$dir.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$pid $port"; exit 0; fi
      kill -0 "$pid" 2>/dev/null || { echo "s3s-fs exited; see $dir.log" >&2; exit 1; }
      sleep 0.1
    done
    kill "$pid"; echo "s3s-fs did not listen on port $port" >&2; exit 1
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
