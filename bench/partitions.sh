#!/usr/bin/env bash
# Cost per partition, Shardline against Apache Kafka in the same run: for each
# count, a fresh broker, then create the partitions (topics of 500), write one
# record to each and read them all back, let it idle, and measure RSS, open
# descriptors and disk of the idle partitions; then produce 1 KiB records
# spread over all of them (both brokers with Kafka's default durability: no
# fsync before the acknowledgement, Shardline's acks_all_fsync=false); then a
# clean stop and restart, timed until every partition's first record reads
# back again.
#
# Usage: bench/partitions.sh [--counts 1000,10000] [--shards 1] [--spread 10]
#                            [--idle 130] [--out target/bench-partitions]
#   --idle: seconds of idle before measuring (Shardline closes idle files and
#           gives back reservations after partition_idle_ms, 60-120 s)
# Needs target/release/shardline and target/release/shardline-bench (cargo
# build --release -p shardline --bin shardline -p shardline-bench --bin
# shardline-bench) and Kafka from bench/kafka/fetch.sh (fetched on first use).
# Prints one table line per broker and count; writes <out>/results.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=1000,10000 shards=1 spread=10 idle=130 out=target/bench-partitions
while [[ $# -gt 0 ]]; do
  case $1 in
    --counts) counts=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --spread) spread=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) sed -n '11,14p' "$0" >&2; exit 2 ;;
  esac
done
bench=target/release/shardline-bench shardline=target/release/shardline
for binary in "$bench" "$shardline"; do
  [[ -x $binary ]] || { echo "build $binary first (see the header)" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
mkdir -p "$out"
results=$out/results.tsv
printf 'broker\tpartitions\tcreate_s\tone_each_s\tread_all_s\tspread_mb_s\trss_mib\trss_kib_per_partition\tfds\tdisk_mib\tdisk_kib_per_partition\tstop_s\trestart_s\n' > "$results"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
disk_kib() { du -sk "$1" | awk '{print $1}'; }

# start_<broker> <dir> <port>: starts it in the background; sets pid.
start_shardline() {
  "$shardline" serve --listen "127.0.0.1:$2" --data-dir "$1/data" --shards "$shards" \
    --set num_partitions=1 --set acks_all_fsync=false > "$1/shardline.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    grep -q "shardline listening" "$1/shardline.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "shardline did not start" >&2; exit 1
}
start_kafka() {
  bench/kafka/start.sh "$1" "$2" --heap 2G > "$1/start.out" 2>&1 &
  for _ in $(seq 1200); do
    grep -q "kafka ready" "$1/start.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "kafka ready" "$1/start.out" || { echo "kafka did not start" >&2; exit 1; }
  pid=$(awk '/^kafka pid/ {print $3}' "$1/start.out")
}
stop_broker() {
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

for count in ${counts//,/ }; do
  for broker in shardline kafka; do
    dir=$(mktemp -d "${TMPDIR:-/tmp}/partitions-$broker-XXXX")
    port=$(free_port)
    "start_$broker" "$dir" "$port"
    fill=$("$bench" partitions --bootstrap "127.0.0.1:$port" --partitions "$count" --spread 0)
    sleep "$idle"
    data=$dir/data; [[ $broker == kafka ]] && data=$dir/logs
    rss=$(rss_kib "$pid") open=$(fds "$pid") disk=$(disk_kib "$data")
    spread_json=$("$bench" partitions --bootstrap "127.0.0.1:$port" --partitions "$count" \
      --spread "$spread" --spread-only)
    started=$(date +%s.%N)
    stop_broker
    stopped=$(date +%s.%N)
    "start_$broker" "$dir" "$port"
    "$bench" partitions --bootstrap "127.0.0.1:$port" --partitions "$count" --verify > /dev/null
    ready=$(date +%s.%N)
    stop_broker
    field() { python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['$1'], 2))" "$fill"; }
    spread_mb_s=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['spread_mb_per_s'], 2))" "$spread_json")
    line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$broker" "$count" \
      "$(field create_s)" "$(field produce_one_each_s)" "$(field read_all_s)" "$spread_mb_s" \
      "$((rss / 1024))" "$((rss / count))" "$open" "$((disk / 1024))" "$((disk / count))" \
      "$(python3 -c "print(round($stopped - $started, 2))")" "$(python3 -c "print(round($ready - $stopped, 2))")")
    echo "$line" | tee -a "$results"
    rm -rf "$dir"
  done
done
