#!/usr/bin/env bash
# CI-friendly `vmctl bench`: few iterations, bounded time. Builds vmctl, vmctl-runtime and
# vmctl-vmm, then measures containers, microVMs, hosted VMs, memory and
# density side by side and writes bench.json + bench.svg under $BENCH_OUT.
#
# usage: scripts/bench.sh [extra vmctl bench options, e.g. --compare old.json]
# env:   BENCH_OUT      output directory            (default: bench-out)
#        BENCH_RUNS     container runs              (default: 5)
#        BENCH_VM_RUNS  VM boots per VMM            (default: 2; vmctl bench alone: 5)
#        BENCH_IO_MIB   MiB of guest disk I/O       (default: 4)
#        BENCH_TIMEOUT  hard limit for the run, s   (default: 1800)
#        PROFILE        debug or release            (default: debug)
# Needs root (namespaces, cgroups, /dev/kvm). Missing peers are skipped, not errors.
set -euo pipefail
cd "$(dirname "$0")/.."
_log_tag=bench
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

[ "$(id -u)" = 0 ] || die "run as root: containers need namespaces and cgroups"
need_cmd cargo "cargo (rustup)"

PROFILE=${PROFILE:-debug}
flags=()
[ "$PROFILE" = release ] && flags=(--release)
stage "building vmctl ($PROFILE)"
# One cargo invocation, so vmctl, vmctl-runtime and vmctl-vmm (the microVM's VMM, measured
# standalone) share one feature resolution (no rebuilds).
cargo build "${flags[@]}" --quiet -p vmctl -p runtime -p vmm --bins

# The guest kernel and initramfs come from the cache (scripts/setup.sh builds them) or from
# $VMCTL_KERNEL / $VMCTL_INITRD; without them the VM levels are skipped with a line saying so.
out=${BENCH_OUT:-bench-out}
stage "vmctl bench -> $out (limit ${BENCH_TIMEOUT:-1800} s)"
timeout --kill-after=30 "${BENCH_TIMEOUT:-1800}" \
  "target/$PROFILE/vmctl" bench \
  --runs "${BENCH_RUNS:-5}" --warmup 1 \
  --vm-runs "${BENCH_VM_RUNS:-2}" --io-mib "${BENCH_IO_MIB:-4}" --vm-timeout 600 \
  --density-budget 3 --density-max 20 \
  --out "$out" "$@"
