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
    log "installing Rust (rustup's server is not reachable from here; trying Debian's cargo)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo rustc
  fi
fi

# The toolchain must be at least the workspace's rust-version (Debian's
# packaged rustc usually is not): say so plainly instead of failing to build.
want_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -1)
have_rust=$(rustc --version 2>/dev/null | awk '{print $2}')
if [ -z "$have_rust" ] || [ "$(printf '%s\n%s\n' "$want_rust" "$have_rust" | sort -V | head -1)" != "$want_rust" ]; then
  echo "this workspace needs Rust $want_rust or newer; found ${have_rust:-no rustc}." >&2
  echo "Install a current toolchain (rustup, or a Rust ${want_rust}+ package) and run this again." >&2
  exit 1
fi

log "cargo fmt --check"
if ! cargo fmt --version >/dev/null 2>&1; then
  echo "cargo fmt is not installed (rustup component add rustfmt): formatting cannot be checked" >&2
  exit 1
fi
cargo fmt --all -- --check

log "cargo clippy (all targets, warnings are errors)"
if ! cargo clippy --version >/dev/null 2>&1; then
  echo "cargo clippy is not installed (rustup component add clippy): lints cannot be checked" >&2
  exit 1
fi
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "building the broker binary from this tree (every suite runs this build)"
cargo build --bin shardline
export SHARDLINE_BIN="$PWD/target/debug/shardline"

mkdir -p target
failed_suites=()

log "layers: no import cycle in engine/ or net/; no clock read outside the runtime's clock"
python3 scripts/import_cycles.py engine/src net/src replication/src || failed_suites+=(import-cycles)
clock_reads=$(grep -rnE 'SystemTime::now|Instant::now' engine/src net/src --include='*.rs' |
  grep -v '^engine/src/runtime/clock.rs:' || true)
if [ -n "$clock_reads" ]; then
  echo "direct clock reads (time must come from the injected clock):"
  echo "$clock_reads"
  failed_suites+=(clock-reads)
fi

log "cargo test (workspace): engine, simulator (SHARDLINE_SIM_SEEDS raises the seeds), broker, and end-to-end tests with librdkafka and raw sockets"
set +e
cargo test --workspace --quiet 2>&1 | tee target/test-output.txt
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_suites+=(cargo)
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($i ~ /^passed/) p += $(i-1) } END { print p + 0 }' target/test-output.txt)
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($i ~ /^failed/) f += $(i-1) } END { print f + 0 }' target/test-output.txt)
skipped=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($i ~ /^ignored/) s += $(i-1) } END { print s + 0 }' target/test-output.txt)

log "Python clients (confluent-kafka, kafka-python) and kcat"
bash tests/python/run.sh 2>&1 | tee target/python-output.txt
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_suites+=(python)
line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed' target/python-output.txt | tail -1)
passed=$((passed + $(echo "$line" | awk '{print $2+0}')))
failed=$((failed + $(echo "$line" | awk '{print $4+0}')))
skipped=$((skipped + $(echo "$line" | awk '{print $6+0}')))

log "franz-go"
bash tests/go/run.sh -v 2>&1 | tee target/go-output.txt
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_suites+=(go)
passed=$((passed + $(grep -cE '^\s*--- PASS' target/go-output.txt)))
failed=$((failed + $(grep -cE '^\s*--- FAIL' target/go-output.txt)))
skipped=$((skipped + $(grep -cE '^\s*--- SKIP' target/go-output.txt)))

log "Java client (kafka-clients 4.1) and Kafka's command-line tools"
bash tests/java/run.sh 2>&1 | tee target/java-output.txt
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_suites+=(java)
read -r java_tests java_bad java_skipped < <(cat tests/java/target/surefire-reports/TEST-*.xml 2>/dev/null |
  grep -o '<testsuite [^>]*>' |
  awk '{ match($0, /tests="[0-9]+"/); t += substr($0, RSTART+7, RLENGTH-8);
         match($0, /failures="[0-9]+"/); f += substr($0, RSTART+10, RLENGTH-11);
         match($0, /errors="[0-9]+"/); e += substr($0, RSTART+8, RLENGTH-9);
         if (match($0, /skipped="[0-9]+"/)) s += substr($0, RSTART+9, RLENGTH-10) }
       END { print t + 0, f + e, s + 0 }')
passed=$((passed + ${java_tests:-0} - ${java_bad:-0} - ${java_skipped:-0}))
failed=$((failed + ${java_bad:-0}))
skipped=$((skipped + ${java_skipped:-0}))
set -e

echo
[ ${#failed_suites[@]} -eq 0 ] || echo "failing suites: ${failed_suites[*]}"
echo "all tests: $passed passed, $failed failed, $skipped skipped"
[ ${#failed_suites[@]} -eq 0 ] && [ "$failed" -eq 0 ]
