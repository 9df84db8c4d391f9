#!/usr/bin/env bash
# Boots the cached guest kernel + initramfs under QEMU microvm and measures the wall time from
# exec to the "VMCTL-GUEST-READY" line. Every console line is printed with its wall time.
#
# usage: guest/kernel/boot-qemu.sh [--kvm] [--cpu MODEL] [--smp N] [--mem SIZE] [--debug] [--timeout S]
#                                  [--append ARGS] [--kernel PATH] [--initrd PATH]
#                                  [--sample-rip S] [--log FILE] [--grace S]
#                                  [--cpu MODEL] [--machine-opts OPTS]
#   --kvm         -enable-kvm, guest/kernel/cmdline-nested, -cpu EPYC-Milan on AMD hosts
#                 (default: TCG)
#   --debug       add "initcall_debug ignore_loglevel" (prints every initcall's duration)
#   --grace S     kill QEMU S seconds after the marker line if it has not exited (default 60)
#   --sample-rip  every S seconds, log the vCPUs' RIP (QEMU monitor) to FILE.rip
# Exit status 0 when the marker line was seen (and QEMU then exited), 1 otherwise.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

ACCEL=tcg CPU="" MACHINE_OPTS="" GRACE=60 SMP=2 MEM=256M DEBUG=0 TIMEOUT=120 EXTRA="" KERNEL="" INITRD="" SAMPLE=0
LOG=${TMPDIR:-/tmp}/vmctl-boot-$$.log
while (($#)); do
  case $1 in
    --kvm) ACCEL=kvm ;;
    --cpu) CPU=$2; shift ;;
    --machine-opts) MACHINE_OPTS=,$2; shift ;;
    --grace) GRACE=$2; shift ;;
    --smp) SMP=$2; shift ;;
    --mem) MEM=$2; shift ;;
    --debug) DEBUG=1 ;;
    --timeout) TIMEOUT=$2; shift ;;
    --append) EXTRA=$2; shift ;;
    --kernel) KERNEL=$2; shift ;;
    --initrd) INITRD=$2; shift ;;
    --sample-rip) SAMPLE=$2; shift ;;
    --log) LOG=$2; shift ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

[ -n "$KERNEL" ] || KERNEL=$("$ROOT/scripts/build-kernel.sh" --print-path)
[ -n "$INITRD" ] || INITRD=$("$ROOT/scripts/build-initramfs.sh" --print-path)
CMDLINE=$(cat "$HERE/cmdline")
if [ "$ACCEL" = kvm ]; then
  CMDLINE="$CMDLINE $(cat "$HERE/cmdline-nested")"
  ACCEL_ARGS=(-enable-kvm)
  # qemu64 (an AMD model) lacks XSAVEERPTR, so the guest would run the FXSAVE-leak workaround
  # (fnclex, emms, fildl) that nested PVM cannot emulate; -cpu host fails to set MSR 0x10a
  # there. EPYC-Milan has XSAVEERPTR and booted in 35 instead of 45 QEMU CPU seconds.
  if [ -z "$CPU" ]; then
    if grep -qm1 AuthenticAMD /proc/cpuinfo; then CPU=EPYC-Milan; else CPU=qemu64,+xsaveerptr; fi
  fi
else
  ACCEL_ARGS=(-accel tcg)
fi
[ -z "$CPU" ] || ACCEL_ARGS+=(-cpu "$CPU")
[ "$DEBUG" = 0 ] || CMDLINE="$CMDLINE initcall_debug ignore_loglevel"
[ -z "$EXTRA" ] || CMDLINE="$CMDLINE $EXTRA"

MON=${TMPDIR:-/tmp}/vmctl-boot-$$.mon
# -device i8042: like the vmctl VMM, so that reboot=k ends QEMU (-no-reboot) at once.
QEMU=(qemu-system-x86_64 -M "microvm$MACHINE_OPTS" "${ACCEL_ARGS[@]}" -smp "$SMP" -m "$MEM"
  -device i8042
  -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE"
  -nodefaults -no-user-config -display none -serial stdio -no-reboot
  -monitor "unix:$MON,server,nowait")
echo "cmdline: $CMDLINE" >&2
echo "exec: ${QEMU[*]}" >&2

# CPU seconds (user + system, all threads) QEMU has used so far: unlike wall time this hardly
# depends on how busy the host is, since nested PVM emulates the guest on the vCPU threads.
qemu_cpu_s() {
  local pid stat
  pid=$(ps -o pid= --ppid "$qpid" | awk "NR == 1 { print \$1 }")
  [ -n "$pid" ] && stat=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo "?"; return; }
  stat=${stat##*) } # fields after "(comm) "; utime and stime are fields 14 and 15
  awk -v s="$stat" -v hz="$(getconf CLK_TCK)" 'BEGIN { split(s, f, " "); printf "%.2f", (f[12] + f[13]) / hz }'
}

sample_rip() { # background: log RIP of all vCPUs every $SAMPLE s
  while sleep "$SAMPLE"; do
    [ -S "$MON" ] || continue
    printf '%s ' "$(date +%T)"
    timeout 5 python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(1)
s.sendall(b"info registers -a\n"); time.sleep(0.5); out = b""
try:
    while True:
        d = s.recv(65536)
        if not d: break
        out += d
except socket.timeout: pass
sys.stdout.write(out.decode(errors="replace"))' "$MON" 2>/dev/null |
      grep -o 'RIP=[0-9a-f]*' | tr '\n' ' '
    echo
  done >>"$LOG.rip"
}

start=$EPOCHREALTIME
seen="" seen_cpu=""
: >"$LOG"
coproc Q { exec timeout "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1; }
qpid=$Q_PID
exec {qout}<&"${Q[0]}"
[ "$SAMPLE" = 0 ] || { sample_rip & sampler=$!; trap 'kill $sampler 2>/dev/null' EXIT; }
while IFS= read -r line <&"$qout"; do
  now=$EPOCHREALTIME
  t=$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%7.3f", b - a }')
  line=${line%$'\r'}
  printf '[%s] %s\n' "$t" "$line" | tee -a "$LOG"
  if [ -z "$seen" ] && [ "$line" = "VMCTL-GUEST-READY" ]; then
    seen=$t
    seen_cpu=$(qemu_cpu_s)
    { sleep "$GRACE"; kill "$qpid" 2>/dev/null; } & # timeout(1) passes SIGTERM on to QEMU
  fi
done
wait "$qpid" && rc=0 || rc=$?
[ -z "${sampler:-}" ] || kill "$sampler" 2>/dev/null || true
rm -f "$MON"
end=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
if [ -n "$seen" ]; then
  echo "RESULT accel=$ACCEL smp=$SMP marker_s=${seen// /} marker_qemu_cpu_s=$seen_cpu exit_s=$end qemu_rc=$rc log=$LOG" >&2
  exit 0
fi
echo "RESULT accel=$ACCEL smp=$SMP marker=NOT-SEEN exit_s=$end qemu_rc=$rc log=$LOG" >&2
exit 1
