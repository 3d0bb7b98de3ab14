#!/usr/bin/env bash
# A/B run of one workload against two Shardline binaries on this machine,
# alternating A, B, A, B (fresh data directory each run), to compare a
# change with the commit before it:
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [WORKLOAD] [DURATION_S] [RUN OPTIONS...]
#
# RUN OPTIONS go to each `shardline-bench run` as they are, for example
# `--compression lz4` or `--topic-compression zstd`.
#
# Build both with `cargo build --release -p shardline --bin shardline`
# (and shardline-bench once). Prints each run's produce MB/s, broker
# CPU-s/GB and peak RSS, then the medians and the B/A ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?old binary}
b=${2:?new binary}
rounds=${3:-3}
workload=${4:-throughput}
duration=${5:-20}
shift $(( $# < 5 ? $# : 5 ))
run_options=("$@")
bench=${SHARDLINE_BENCH:-target/release/shardline-bench}
out=$(mktemp -d)
# A failed run must not leave its broker running or its data behind.
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

run_one() { # label binary round
  local label=$1 binary=$2 round=$3
  local port data pid
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  data="$out/data-$label-$round"
  "$binary" serve --listen "127.0.0.1:$port" --data-dir "$data" > "$out/$label-$round.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q "listening" "$out/$label-$round.log" && break
    sleep 0.1
  done
  "$bench" run --bootstrap "127.0.0.1:$port" --workload "$workload" --broker-pid "$pid" \
    --broker-name "$label" --duration "$duration" --out "$out/$label-$round.json" "${run_options[@]}" 2> "$out/$label-$round.bench"
  kill -TERM "$pid"
  wait "$pid" || true
  rm -rf "$data"
  python3 - "$out/$label-$round.json" "$label" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} round {sys.argv[3]}: {r['produce_mb_per_s']:.1f} MB/s, "
      f"{r['broker_cpu_s_per_gb']:.2f} CPU-s/GB, {r['broker_peak_rss_mib']:.0f} MiB peak RSS, {r['errors']} errors")
EOF
}

for round in $(seq 1 "$rounds"); do
  run_one A "$a" "$round"
  run_one B "$b" "$round"
done

python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def medians(label):
    runs = [json.load(open(f"{out}/{label}-{i}.json")) for i in range(1, rounds + 1)]
    return {k: statistics.median(r[k] for r in runs) for k in ("produce_mb_per_s", "broker_cpu_s_per_gb", "broker_peak_rss_mib")}
a, b = medians("A"), medians("B")
for key in a:
    print(f"median {key}: A {a[key]:.2f}  B {b[key]:.2f}  B/A {b[key] / a[key]:.3f}")
EOF
