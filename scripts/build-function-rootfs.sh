#!/usr/bin/env bash
# Builds a realistic function root filesystem: a minimal Debian (bookworm,
# debootstrap --variant=minbase) with python3 and numpy, about 260 MiB. It is
# the base image of `stratus bench images`, which adds each function as a
# layer on top.
#
#   scripts/build-function-rootfs.sh OUT_DIR
#
# The debootstrap result is cached as a tarball under target/tools/ so a
# machine builds it once (about 2-4 minutes, needs the Debian mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/build-function-rootfs.sh OUT_DIR}
suite=${STRATUS_DEBIAN_SUITE:-bookworm}
mirror=${STRATUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=target/tools/debian-$suite-python3-numpy.tar

if [ "$(id -u)" != 0 ]; then echo "build-function-rootfs.sh: needs root (debootstrap)" >&2; exit 1; fi
if [ ! -s "$cache" ]; then
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
  }
  mkdir -p target/tools
  tmp=$(mktemp -d target/tools/debootstrap.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  echo "debootstrap $suite (minbase + python3, numpy) into $tmp ..." >&2
  debootstrap --variant=minbase --include=python3,python3-numpy "$suite" "$tmp/root" "$mirror" >"$tmp/log" 2>&1 || {
    tail -30 "$tmp/log" >&2; exit 1; }
  # Drop what a function never needs and what makes builds non-reproducible.
  rm -rf "$tmp/root/var/cache/apt/"*.bin "$tmp/root/var/lib/apt/lists/"* "$tmp/root/var/log/"* \
         "$tmp/root/debootstrap"
  tar -C "$tmp/root" --numeric-owner -cf "$cache.part" .
  mv "$cache.part" "$cache"
fi
rm -rf "$out"
mkdir -p "$out"
tar -C "$out" --numeric-owner -xf "$cache"
echo "rootfs ready: $out ($(du -sh "$out" | cut -f1))" >&2
