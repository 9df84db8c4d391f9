#!/usr/bin/env bash
# Builds the vmctl test initramfs: an UNCOMPRESSED newc cpio with Debian's static busybox and
# guest/kernel/initramfs/init (boot marker, VMCTL-GUEST-READY line, reboot/poweroff/shell).
# Made without root with the kernel's gen_init_cpio (device nodes come from the file list).
#
# Result: ~/.cache/vmctl/initramfs/<hash>/initramfs.cpio, <hash> covering every input;
# ~/.cache/vmctl/initramfs/current points at the latest one. The cpio path is printed on
# stdout, everything else goes to stderr.
#
# usage: scripts/build-initramfs.sh [--print-path] [--force]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_log_tag=initramfs
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# ---- build-relevant settings: all of them are part of the cache key ------------------------
BUSYBOX=/bin/busybox
BUSYBOX_PKG=busybox-static
SRC_PKG=linux-source-6.1 # provides usr/gen_init_cpio.c
SRC_TAR=/usr/src/linux-source-6.1.tar.xz
SRC_DIR_IN_TAR=linux-source-6.1
INIT=$ROOT/guest/kernel/initramfs/init
FSTAB=$ROOT/guest/kernel/initramfs/fstab
TIMESTAMP=0 # mtime of directories, links and nodes: reproducible archives
# Applets linked into /bin (the shell mode installs all the others at run time).
APPLETS=(sh ash mount umount mkdir rmdir cat echo ls ln cp mv rm chmod uname nproc reboot
  poweroff halt devmem dmesg ps sleep ip ifconfig grep sed awk head tail wc tr cut env kill
  stat sync true false test "[" setsid cttyhack mknod hostname df free uptime dd find xargs id
  chroot switch_root pivot_root unshare nsenter vi less)
SETTINGS_VERSION=1 # bump when this script changes what goes into the archive
# ---------------------------------------------------------------------------------------------

PRINT_PATH=0
FORCE=0
for arg in "$@"; do
  case $arg in
    --print-path) PRINT_PATH=1 ;;
    --force) FORCE=1 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

CACHE=$VMCTL_CACHE/initramfs

check_deps() {
  need_cmd gcc gcc
  need_cmd flock util-linux
  need_file "$BUSYBOX" "$BUSYBOX_PKG"
  need_file "$SRC_TAR" "$SRC_PKG"
  [ -f "$INIT" ] || die "init script $INIT is missing"
  [ -f "$FSTAB" ] || die "$FSTAB is missing"
  # A dynamically linked busybox would need its libraries in the archive.
  if LC_ALL=C readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    die "$BUSYBOX is dynamically linked: install the static one with 'apt-get install $BUSYBOX_PKG'"
  fi
}

# The kernel's gen_init_cpio, compiled once per linux-source version.
gen_init_cpio() {
  local ver tool src
  ver=$(pkg_version "$SRC_PKG")
  tool=$VMCTL_CACHE/tools/gen_init_cpio-$ver
  if [ ! -x "$tool" ]; then
    mkdir -p "$(dirname "$tool")"
    # Reuse the kernel build's source tree when there is one, else read the tarball.
    src=$(find "$VMCTL_CACHE/kernel/work" -maxdepth 4 -path "*/$SRC_DIR_IN_TAR/usr/gen_init_cpio.c" \
      2>/dev/null | head -n1 || true)
    if [ -z "$src" ]; then
      log "extracting usr/gen_init_cpio.c from $SRC_TAR"
      src=$(mktemp --suffix=.c)
      tar -xJOf "$SRC_TAR" "$SRC_DIR_IN_TAR/usr/gen_init_cpio.c" >"$src"
    fi
    gcc -O2 -o "$tool.tmp" "$src" || die "compiling $src failed"
    mv "$tool.tmp" "$tool"
    case $src in /tmp/*) rm -f "$src" ;; esac
  fi
  printf '%s\n' "$tool"
}

# The gen_init_cpio file list; $1 = path of busybox, $2 = path of init, $3 = path of fstab.
file_list() {
  cat <<EOF
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
nod /dev/null 0666 0 0 c 1 3
nod /dev/mem 0600 0 0 c 1 1
dir /proc 0555 0 0
dir /sys 0555 0 0
dir /tmp 1777 0 0
dir /run 0755 0 0
dir /root 0700 0 0
dir /etc 0755 0 0
dir /mnt 0755 0 0
dir /bin 0755 0 0
slink /sbin bin 0777 0 0
dir /usr 0755 0 0
slink /usr/bin ../bin 0777 0 0
slink /usr/sbin ../bin 0777 0 0
file /bin/busybox $1 0755 0 0
file /init $2 0755 0 0
file /etc/fstab $3 0644 0 0
EOF
  local a
  for a in "${APPLETS[@]}"; do
    echo "slink /bin/$a busybox 0777 0 0"
  done
}

cache_key() {
  {
    echo "settings v$SETTINGS_VERSION timestamp=$TIMESTAMP"
    echo "gen_init_cpio $SRC_PKG $(pkg_version "$SRC_PKG")"
    echo "busybox $(sha256sum <"$BUSYBOX")"
    echo "init $(sha256sum <"$INIT")"
    echo "fstab $(sha256sum <"$FSTAB")"
    file_list BUSYBOX INIT FSTAB
  } | sha256_stdin
}

main() {
  check_deps
  local key out tmp tool t0=$SECONDS
  key=$(cache_key)
  out=$CACHE/$key
  if [ "$FORCE" = 0 ] && [ -f "$out/initramfs.cpio" ]; then
    ln -sfn "$key" "$CACHE/current"
    [ "$PRINT_PATH" = 1 ] || log "up to date: $out"
    echo "$out/initramfs.cpio"
    return
  fi
  with_lock "$CACHE/.lock"
  stage "building initramfs $key"
  tool=$(gen_init_cpio)
  tmp=$CACHE/.tmp-$key
  rm -rf "$tmp"
  mkdir -p "$tmp"
  file_list "$BUSYBOX" "$INIT" "$FSTAB" >"$tmp/files.list"
  "$tool" -t "$TIMESTAMP" "$tmp/files.list" >"$tmp/initramfs.cpio" ||
    die "gen_init_cpio failed on $tmp/files.list"
  echo "busybox=$(pkg_version "$BUSYBOX_PKG")" >"$tmp/build-info"
  publish_cache_dir "$tmp" "$out"
  log "built in $((SECONDS - t0)) s: $out/initramfs.cpio" \
    "($(du -h "$out/initramfs.cpio" | cut -f1), uncompressed newc)"
  echo "$out/initramfs.cpio"
}

main
