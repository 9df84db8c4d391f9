#!/usr/bin/env bash
# The project's test command (README): installs what is missing, builds the guest kernel and
# images (cached under ~/.cache/vmctl), then runs formatting, lint and the whole test suite
# against real KVM, namespaces, cgroups and QEMU. Must run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n== %s (%ds)\n' "$1" "$SECONDS"; }

step "setup: packages, guest kernel, initramfs"
scripts/setup.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "build"
cargo build --workspace --all-targets --quiet

step "tests"
cargo test --workspace --no-fail-fast -- "$@"

step "done"
