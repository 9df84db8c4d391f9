#!/usr/bin/env bash
# Installs what vmctl needs on a fresh Debian 12 host (run as root), then builds the guest
# kernel and images (cached under ~/.cache/vmctl, keyed by their inputs).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(linux-source flex bison bc libelf-dev libssl-dev dwarves cpio rsync
      busybox-static e2fsprogs qemu-system-x86 crun runc iptables iproute2 socat)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo ">> installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Guest side, each cached under ~/.cache/vmctl keyed by the hash of its inputs.
scripts/build-kernel.sh          # guest kernel (vmlinux, bzImage) from Debian's linux-source
scripts/build-initramfs.sh       # busybox test initramfs (boot marker, READY line, reboot)
scripts/build-guest-image.sh     # guest agent initramfs (PID 1 of microvm/hosted guests)
echo ">> setup done"
