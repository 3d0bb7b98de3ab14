#!/usr/bin/env bash
# End-to-end client tests for Shardline: pytest (confluent-kafka, kafka-python)
# then kcat. Installs whatever is missing first (works on a fresh Debian
# machine as root). Every step is bounded in time.
#
# Usage (from anywhere):  bash tests/python/run.sh
# Environment: SHARDLINE_BIN  broker binary (default target/debug/shardline;
#              built with cargo if absent and cargo is available).
set -uo pipefail
cd "$(dirname "$0")/../.."

log() { printf '\n==> %s\n' "$*"; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then timeout 600 apt-get update -qq || return 1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@"
}

# --- system packages -----------------------------------------------------------
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
{ command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; } || need_apt+=(python3-pip)
command -v kcat >/dev/null || need_apt+=(kcat)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (apt)"
  apt_install "${need_apt[@]}" || { echo "apt-get install failed"; exit 1; }
fi

# --- Python packages (pinned) ----------------------------------------------------
REQ=tests/python/requirements.txt
if ! timeout 60 python3 - "$REQ" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
missing = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        if version(name) != want:
            missing.append(line)
    except PackageNotFoundError:
        missing.append(line)
if missing:
    print("missing:", " ".join(missing))
    sys.exit(1)
EOF
then
  log "pip install -r $REQ"
  # Debian's system Python refuses root installs without this (PEP 668).
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
    timeout 900 python3 -m pip install -q --disable-pip-version-check -r "$REQ" \
    || { echo "pip install failed"; exit 1; }
fi

# --- broker binary ---------------------------------------------------------------
BIN="${SHARDLINE_BIN:-target/debug/shardline}"
if [ ! -x "$BIN" ]; then
  # A concurrent rebuild may be replacing it: wait a little first.
  for _ in $(seq 1 60); do [ -x "$BIN" ] && break; sleep 2; done
fi
if [ ! -x "$BIN" ] && [ -z "${SHARDLINE_BIN:-}" ]; then
  command -v cargo >/dev/null || [ ! -x "$HOME/.cargo/bin/cargo" ] || export PATH="$HOME/.cargo/bin:$PATH"
  if command -v cargo >/dev/null; then
    log "building the broker (cargo build --bin shardline)"
    timeout 2400 cargo build --quiet --bin shardline || { echo "cargo build failed"; exit 1; }
  fi
fi
[ -x "$BIN" ] || { echo "no broker binary at $BIN"; exit 1; }
export SHARDLINE_BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# --- tests -------------------------------------------------------------------------
mkdir -p target
log "python3 -m pytest -q tests/python"
timeout 1500 python3 -m pytest -q tests/python 2>&1 | tee target/e2e-pytest.txt
py_rc=${PIPESTATUS[0]}

log "tests/kcat/run.sh"
timeout 600 bash tests/kcat/run.sh 2>&1 | tee target/e2e-kcat.txt
kcat_rc=${PIPESTATUS[0]}

# One closing line for both runs.
py_pass=$(grep -Eo '[0-9]+ passed' target/e2e-pytest.txt | tail -1 | grep -Eo '[0-9]+'); py_pass=${py_pass:-0}
py_fail=$(( $(grep -Eo '[0-9]+ failed' target/e2e-pytest.txt | tail -1 | grep -Eo '[0-9]+' || echo 0) + \
            $(grep -Eo '[0-9]+ errors?' target/e2e-pytest.txt | tail -1 | grep -Eo '[0-9]+' || echo 0) ))
py_skip=$(grep -Eo '[0-9]+ skipped' target/e2e-pytest.txt | tail -1 | grep -Eo '[0-9]+' || echo 0)
k_line=$(grep -E '^kcat: [0-9]+ passed, [0-9]+ failed' target/e2e-kcat.txt | tail -1)
k_pass=$(sed -E 's/^kcat: ([0-9]+) passed.*/\1/' <<<"${k_line:-kcat: 0 passed}")
k_fail=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"${k_line:-x 1 failed}")
[ "$py_rc" -ne 0 ] && [ "$py_fail" -eq 0 ] && py_fail=1   # crash, timeout, or no tests
[ "$kcat_rc" -ne 0 ] && [ "$k_fail" -eq 0 ] && k_fail=1
echo
echo "e2e: $((py_pass + k_pass)) passed, $((py_fail + k_fail)) failed, ${py_skip:-0} skipped"
[ "$py_rc" -eq 0 ] && [ "$kcat_rc" -eq 0 ]
