#!/usr/bin/env bash
# Builds the vmctl guest kernel (vmlinux for PVH boot, bzImage, System.map) from Debian's
# linux-source package: `make tinyconfig` + guest/kernel/config + guest/kernel/patches/*.patch.
#
# Result: ~/.cache/vmctl/kernel/<hash>/{vmlinux,bzImage,System.map,config,build-info}, where
# <hash> covers every build input; ~/.cache/vmctl/kernel/current points at the latest one.
# A run whose inputs are already built does nothing. The vmlinux path is printed on stdout,
# everything else goes to stderr.
#
# usage: scripts/build-kernel.sh [--print-path] [--force]
#   --print-path  print only the vmlinux path (building first if needed)
#   --force       rebuild even if the cache entry exists
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_log_tag=kernel
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# ---- build-relevant settings: all of them are part of the cache key ------------------------
SRC_PKG=linux-source-6.1
SRC_TAR=/usr/src/linux-source-6.1.tar.xz
SRC_DIR_IN_TAR=linux-source-6.1
KARCH=x86_64
BASE_CONFIG=tinyconfig
TARGETS=(vmlinux bzImage)
MAKE_VARS=(ARCH="$KARCH" KBUILD_BUILD_USER=vmctl KBUILD_BUILD_HOST=vmctl)
SETTINGS_VERSION=1 # bump when this script changes how it builds
FRAGMENT=$ROOT/guest/kernel/config
PATCH_DIR=$ROOT/guest/kernel/patches
# ---------------------------------------------------------------------------------------------

PRINT_PATH=0
FORCE=0
for arg in "$@"; do
  case $arg in
    --print-path) PRINT_PATH=1 ;;
    --force) FORCE=1 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

CACHE=$VMCTL_CACHE/kernel
JOBS=$(nproc)

check_deps() {
  need_cmd make make
  need_cmd gcc gcc
  need_cmd flex flex
  need_cmd bison bison
  need_cmd bc bc
  need_cmd pahole dwarves
  need_cmd cpio cpio
  need_cmd xz xz-utils
  need_cmd perl perl
  need_cmd flock util-linux
  need_file /usr/include/gelf.h libelf-dev
  need_file /usr/include/openssl/opensslv.h libssl-dev
  need_file "$SRC_TAR" "$SRC_PKG"
  [ -f "$FRAGMENT" ] || die "config fragment $FRAGMENT is missing"
}

patches() { find "$PATCH_DIR" -maxdepth 1 -name '*.patch' 2>/dev/null | LC_ALL=C sort; }

# Key of the patched source tree: package version + patches.
source_key() {
  {
    echo "src $SRC_PKG $(pkg_version "$SRC_PKG")"
    local p
    for p in $(patches); do
      echo "patch $(basename "$p")"
      cat "$p"
    done
  } | sha256_stdin
}

# Key of the whole build: source key + fragment + settings + compiler.
build_key() {
  {
    echo "settings v$SETTINGS_VERSION arch=$KARCH base=$BASE_CONFIG targets=${TARGETS[*]}"
    echo "make ${MAKE_VARS[*]}"
    echo "cc $(gcc --version | head -n1)"
    echo "source $1"
    cat "$FRAGMENT"
  } | sha256_stdin
}

# Prints the wanted options of the fragment as "NAME VALUE" (VALUE "n" for "is not set").
fragment_options() {
  sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*\)=\(.*\)$/\1 \2/p' \
    -e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1 n/p' "$FRAGMENT"
}

# Fails naming every fragment option that olddefconfig did not keep as asked.
verify_config() {
  local cfg=$1 name want have bad=0
  while read -r name want; do
    have=$(sed -n "s/^$name=\(.*\)$/\1/p" "$cfg")
    [ -n "$have" ] || have=n # "# ... is not set" or not visible at all
    if [ "$have" != "$want" ]; then
      log "config mismatch: $name wanted '$want' but olddefconfig made it '$have'" \
        "(unmet dependency? see 'make O=$OBJ menuconfig', search $name)"
      bad=1
    fi
  done < <(fragment_options)
  [ "$bad" = 0 ] || die "the kernel configuration does not match $FRAGMENT (see above)"
  log "all $(fragment_options | wc -l) options of guest/kernel/config verified"
}

# Extracts the package's tarball and applies the patches, once per source key.
prepare_source() {
  local key=$1 dir=$CACHE/work/src-$1
  SRC=$dir/$SRC_DIR_IN_TAR
  if [ -f "$dir/.ready" ]; then
    log "source tree: $SRC (already patched)"
    return
  fi
  stage "extracting $SRC_TAR ($SRC_PKG $(pkg_version "$SRC_PKG"))"
  # Only one source tree is kept: trees of other keys are stale.
  rm -rf "$CACHE"/work/src-* "$CACHE"/work/obj-*
  mkdir -p "$dir"
  tar -xJf "$SRC_TAR" -C "$dir"
  local p
  for p in $(patches); do
    stage "applying $(basename "$p")"
    patch -d "$SRC" -p1 --forward --quiet <"$p" || die "patch $p does not apply to $SRC_PKG"
  done
  touch "$dir/.ready"
}

# Condenses kbuild's output: one progress line per 250 objects, warnings and errors verbatim.
progress_filter() {
  local log=$1 n=0 start=$SECONDS line
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$log"
    case $line in
      "  LD      vmlinux" | "  BTF "* | "  KSYMS "*) log "  $line" ;;
      "  "[A-Z]*" "*)
        n=$((n + 1))
        if ((n % 250 == 0)); then
          log "  ... $n build steps done ($((SECONDS - start)) s)"
        fi
        ;;
      *error* | *Error* | *warning:* | *"is ready"*) printf '[kernel]   %s\n' "$line" >&2 ;;
    esac
  done
  log "  ... $n build steps in total"
}

kmake() { make -C "$SRC" O="$OBJ" "${MAKE_VARS[@]}" "$@"; }

build() {
  local key=$1 out=$2 t0=$SECONDS log
  OBJ=$CACHE/work/obj-$SRC_KEY
  mkdir -p "$OBJ"
  log=$OBJ/build.log
  : >"$log"

  stage "configuring: $BASE_CONFIG + guest/kernel/config"
  kmake "$BASE_CONFIG" >>"$log" 2>&1 || die "make $BASE_CONFIG failed, see $log"
  "$SRC/scripts/kconfig/merge_config.sh" -m -O "$OBJ" "$OBJ/.config" "$FRAGMENT" >>"$log" 2>&1 ||
    die "merge_config.sh failed, see $log"
  kmake olddefconfig >>"$log" 2>&1 || die "make olddefconfig failed, see $log"
  verify_config "$OBJ/.config"

  stage "compiling ${TARGETS[*]} with -j$JOBS (full log: $log)"
  set +e
  kmake -j"$JOBS" "${TARGETS[@]}" 2>&1 | progress_filter "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ]; then
    tail -n 40 "$log" >&2
    die "kernel build failed (make exit $rc), full log: $log"
  fi

  local tmp=$CACHE/.tmp-$key
  rm -rf "$tmp"
  mkdir -p "$tmp"
  cp "$OBJ/vmlinux" "$OBJ/System.map" "$tmp/"
  cp "$OBJ/arch/x86/boot/bzImage" "$tmp/bzImage"
  cp "$OBJ/.config" "$tmp/config"
  local secs=$((SECONDS - t0))
  {
    echo "kernel_release=$(kmake -s kernelrelease)"
    echo "source_package=$SRC_PKG $(pkg_version "$SRC_PKG")"
    echo "patches=$(patches | xargs -rn1 basename | paste -sd, -)"
    echo "build_seconds=$secs"
    echo "jobs=$JOBS"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$tmp/build-info"
  publish_cache_dir "$tmp" "$out"
  log "built in $(fmt_secs "$secs") ($secs s) with -j$JOBS;" \
    "vmlinux $(du -h "$out/vmlinux" | cut -f1), bzImage $(du -h "$out/bzImage" | cut -f1)"
}

main() {
  check_deps
  SRC_KEY=$(source_key)
  local key out
  key=$(build_key "$SRC_KEY")
  out=$CACHE/$key
  if [ "$FORCE" = 0 ] && [ -f "$out/vmlinux" ] && [ -f "$out/build-info" ]; then
    ln -sfn "$key" "$CACHE/current"
    [ "$PRINT_PATH" = 1 ] || log "up to date: $out"
    echo "$out/vmlinux"
    return
  fi
  with_lock "$CACHE/.lock"
  if [ "$FORCE" = 0 ] && [ -f "$out/vmlinux" ] && [ -f "$out/build-info" ]; then
    ln -sfn "$key" "$CACHE/current" # built by the run we waited for
    echo "$out/vmlinux"
    return
  fi
  stage "building guest kernel $key"
  prepare_source "$SRC_KEY"
  build "$key" "$out"
  log "vmlinux:    $out/vmlinux"
  log "bzImage:    $out/bzImage"
  log "System.map: $out/System.map"
  log "current ->  $key"
  echo "$out/vmlinux"
}

main
