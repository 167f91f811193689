#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine
# (as root), then runs the whole workspace's tests.
#   scripts/test.sh [CARGO TEST ARGS...]
#   scripts/test.sh --install-only    # only install (before a build: protoc)
set -euo pipefail
cd "$(dirname "$0")/.."
install_only=0
if [ "${1:-}" = "--install-only" ]; then install_only=1; shift; fi

need=()
command -v python3 >/dev/null || need+=(python3)   # the Python example function
command -v runc >/dev/null || need+=(runc)         # the runc sandbox (crun fails on hybrid cgroups)
command -v fusermount3 >/dev/null || need+=(fuse3) # lazy image root filesystems
command -v etcd >/dev/null || need+=(etcd-server)  # the 3-member etcd cluster tests
command -v protoc >/dev/null || need+=(protobuf-compiler) # building etcd-client's gRPC code
command -v ip >/dev/null || need+=(iproute2)       # the namespace cluster (scripts/cluster.sh): ip, tc
command -v curl >/dev/null || need+=(curl)         # the namespace cluster's health checks
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing: ${need[*]}; install them (e.g. sudo apt-get install ${need[*]}) and rerun" >&2
    exit 1
  fi
fi

# As root, the platform runs functions as `nobody`, who must be able to
# reach the repository (the function binaries and example scripts). A clone
# under a private directory (root's 0700 home) is out of its reach: give
# "others" search permission (x, not read) on the directories above it.
if [ "$(id -u)" = 0 ]; then
  d="$(pwd -P)"
  while :; do
    if [ "$(stat -c %u "$d")" != 65534 ] && [ $(( 0$(stat -c %a "$d") & 1 )) = 0 ]; then
      echo "chmod o+x $d: the tests' functions run as nobody, who must reach $(pwd -P)" >&2
      chmod o+x "$d"
    fi
    [ "$d" = / ] && break
    d="$(dirname "$d")"
  done
fi

# QEMU, the cloud kernel and busybox for the microvm sandbox tests.
./scripts/build-microvm-guest.sh --install-only
[ "$install_only" = 1 ] && exit 0

# stratus/etcd: `stratus up --etcd` and its test against a real etcd cluster;
# as root, the namespace cluster tests (scripts/cluster.sh) run too.
cargo test --workspace --features stratus/etcd "$@"
