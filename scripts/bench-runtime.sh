#!/usr/bin/env bash
# Container start-up benchmark: create + start + delete of /bin/true on one busybox bundle,
# with vmctl-runtime, crun and runc (the same config.json), plus `vmctl run --rm`.
# Prints the median per runtime and the ratios. Usage: scripts/bench-runtime.sh [N]  (root)
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
OURS=${VMCTL_RUNTIME:-target/release/vmctl-runtime}
VMCTL=${VMCTL_BIN:-target/release/vmctl}
[ -x "$OURS" ] || cargo build --release -q -p runtime --bin vmctl-runtime
[ -x "$OURS" ] || { echo "no $OURS"; exit 1; }

WORK=$(mktemp -d /tmp/vmctl-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
B=$WORK/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys"
cp /bin/busybox "$B/rootfs/bin/"
ln -s busybox "$B/rootfs/bin/true"; ln -s busybox "$B/rootfs/bin/sh"
"$OURS" spec --bundle "$B"
python3 - "$B/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open(p, "w"))
PY

now() { date +%s%N; }

# bench NAME CMD...: N rounds of create/start/delete; prints the median in microseconds.
bench() {
  local name=$1 bin=$2 root=$WORK/root-$1 times=() i id t0 t1
  mkdir -p "$root"
  # One probe round: skip the runtime (with its error) when it cannot run here.
  if ! err=$("$bin" --root "$root" run --bundle "$B" "probe-$name" 2>&1 </dev/null >/dev/null); then
    "$bin" --root "$root" delete --force "probe-$name" >/dev/null 2>&1
    echo "$name: SKIPPED ($(echo "$err" | tail -1))" >&2
    return 1
  fi
  for ((i = 0; i < N; i++)); do
    id="b-$name-$i"
    t0=$(now)
    "$bin" --root "$root" create --bundle "$B" "$id" </dev/null >/dev/null 2>&1 || { echo "$name create failed" >&2; return 1; }
    "$bin" --root "$root" start "$id" </dev/null >/dev/null 2>&1 || { echo "$name start failed" >&2; return 1; }
    "$bin" --root "$root" delete --force "$id" >/dev/null 2>&1 || { echo "$name delete failed" >&2; return 1; }
    t1=$(now)
    times+=($(((t1 - t0) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

bench_vmctl() {
  local times=() i t0 t1
  "$VMCTL" run --rm --network none "$B/rootfs" -- /bin/true >/dev/null 2>&1 || { echo "vmctl: SKIPPED" >&2; return 1; }
  for ((i = 0; i < N; i++)); do
    t0=$(now)
    "$VMCTL" run --rm --network none "$B/rootfs" -- /bin/true </dev/null >/dev/null 2>&1
    t1=$(now)
    times+=($(((t1 - t0) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

echo "create+start+delete of /bin/true, N=$N, median (us); cgroups: $(stat -fc %T /sys/fs/cgroup)"
ours=$(bench vmctl-runtime "$OURS") && echo "vmctl-runtime: $ours"
crun=$(bench crun /usr/bin/crun) && echo "crun:          $crun"
if [ -z "${crun:-}" ]; then
  # crun 1.8 refuses hybrid cgroup hosts; measure it without cgroups as a lower bound.
  printf '#!/bin/sh\nexec /usr/bin/crun --cgroup-manager=disabled "$@"\n' > "$WORK/crun-nocg"
  chmod +x "$WORK/crun-nocg"
  crun_nocg=$(bench crun-nocg "$WORK/crun-nocg") && echo "crun --cgroup-manager=disabled (no cgroups, lower bound): $crun_nocg"
fi
runc=$(bench runc /usr/sbin/runc) && echo "runc:          $runc"
if [ -x "$VMCTL" ]; then
  v=$(bench_vmctl) && echo "vmctl run --rm: $v"
fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
[ -n "${ours:-}" ] && [ -n "${crun:-}" ] && echo "vmctl-runtime / crun = $(ratio "$ours" "$crun") (target <= 1.0)"
[ -n "${ours:-}" ] && [ -n "${crun_nocg:-}" ] && echo "vmctl-runtime / crun-without-cgroups = $(ratio "$ours" "$crun_nocg")"
[ -n "${ours:-}" ] && [ -n "${runc:-}" ] && echo "vmctl-runtime / runc = $(ratio "$ours" "$runc") (target <= 0.5)"
exit 0
