#!/usr/bin/env bash
# Installs whatever the tests need that is missing, then runs every test.
# Safe to run on a fresh machine and again on a used one.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    log "installing Rust (rustup from crates' toolchain mirror is not reachable; using Debian's cargo)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo rustc
  fi
fi

log "cargo fmt --check"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
fi

log "cargo clippy (all targets, warnings are errors)"
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

log "cargo test (workspace)"
mkdir -p target
cargo test --workspace --quiet 2>&1 | tee target/test-output.txt

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' target/test-output.txt
