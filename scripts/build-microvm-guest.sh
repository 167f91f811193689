#!/usr/bin/env bash
# MicroVM sandboxes: installs QEMU, Debian's cloud kernel and a static busybox
# when missing (Debian, as root), then builds a guest image for a program.
#
#   scripts/build-microvm-guest.sh --install-only
#   scripts/build-microvm-guest.sh [PROGRAM [ARGS...]]     # default: target/debug/stratus fn echo
#
# The image (an uncompressed cpio initramfs: busybox, the /init guest agent,
# the virtio modules, PROGRAM with its shared libraries, and a run script) is
# written under target/tools/microvm/, and the QEMU command line that boots it
# is printed. The tests and the platform build the same image in-process
# (crates/microvm/src/guest.rs); this script is for CI set-up and manual runs.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || need+=(linux-image-cloud-amd64)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]}; install them (sudo apt-get install --no-install-recommends ${need[*]}) and rerun" >&2
    exit 1
  fi
fi
# QEMU's user-mode network (slirp) is the invocation channel: check it is built in.
if ! qemu-system-x86_64 -netdev help 2>/dev/null | grep -qx user; then
  echo "qemu-system-x86_64 lacks user-mode networking (slirp); the microvm backend needs it" >&2
  exit 1
fi
[ "${1:-}" = "--install-only" ] && exit 0

prog="${1:-target/debug/stratus}"
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- fn echo
if [ ! -x "$prog" ] && [ "$prog" = target/debug/stratus ]; then
  cargo build -q -p stratus
fi
cargo run -q -p stratus-microvm --example guest_image -- target/tools/microvm "$prog" "$@"
