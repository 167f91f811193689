#!/usr/bin/env bash
# Dask, Ray and Stratus side by side on the same DAGs; see README.md.
# Usage: bench/peers/run.sh [peers.py flags], e.g. --dags DIR/dags.json --json out.json
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv (dask[distributed] and ray from PyPI, pinned in requirements.txt)…" >&2
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --disable-pip-version-check -q -r "$here/requirements.txt"; then
        rm -rf "$venv"  # do not leave a half-installed environment behind
        echo "pip install failed" >&2
        exit 1
    fi
fi

if [ ! -x "$root/target/release/stratus" ]; then
    echo "building target/release/stratus…" >&2
    (cd "$root" && cargo build --release -p stratus)
fi

cd "$root"
exec "$venv/bin/python" "$here/peers.py" "$@"
