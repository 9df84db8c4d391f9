# shellcheck shell=bash
# Shared helpers for the vmctl build scripts (sourced, not executed).

# Root of all vmctl caches; override with VMCTL_CACHE.
VMCTL_CACHE=${VMCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmctl}

# Every message goes to stderr so that stdout carries only the result path.
_log_tag=${_log_tag:-vmctl}
log() { printf '[%s] %s\n' "$_log_tag" "$*" >&2; }
stage() { printf '[%s] == %s\n' "$_log_tag" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$_log_tag" "$*" >&2; exit 1; }

# need_cmd COMMAND DEBIAN_PACKAGE: fail naming the package that provides COMMAND.
need_cmd() {
  command -v "$1" >/dev/null 2>&1 ||
    die "'$1' not found: install it with 'apt-get install $2' (or run scripts/setup.sh)"
}

# need_file PATH DEBIAN_PACKAGE: fail naming the package that provides PATH.
need_file() {
  [ -e "$1" ] || die "$1 not found: install it with 'apt-get install $2' (or run scripts/setup.sh)"
}

# pkg_version PACKAGE: the installed Debian version of PACKAGE (fails if not installed).
pkg_version() {
  local v
  v=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null) || true
  [ -n "$v" ] || die "Debian package '$1' is not installed: run 'apt-get install $1'"
  printf '%s\n' "$v"
}

# sha256 of stdin, hex only.
sha256_stdin() { sha256sum | cut -d' ' -f1; }

# fmt_secs N: 187 -> 3m07s
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# publish_cache_dir TMPDIR FINALDIR: atomically move a finished build into place and point
# the 'current' symlink next to it at it.
publish_cache_dir() {
  local tmp=$1 final=$2
  rm -rf "$final"
  mv "$tmp" "$final"
  ln -sfn "$(basename "$final")" "$(dirname "$final")/current"
}

# with_lock FILE: take an exclusive lock on FILE for the rest of the script (fd 9).
with_lock() {
  mkdir -p "$(dirname "$1")"
  exec 9>"$1"
  if ! flock -n 9; then
    log "waiting for another build holding $1"
    flock 9
  fi
}
