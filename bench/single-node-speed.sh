#!/usr/bin/env bash
# Single-node baseline for the broker issue: produce 1 KiB messages to 8
# partitions with acks=-1 and linger.ms=5 through librdkafka, then consume
# them back. Reports MB/s both ways, broker CPU-seconds per GB (utime+stime
# from /proc) and the broker's peak RSS (VmHWM). Release build; about 2 min.
# BROKER_ARGS adds broker flags, e.g. "--set acks_all_fsync=false".
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${MESSAGES:-1000000}
cargo build --release --quiet --bin shardline -p shardline
cargo build --release --quiet --bin shardline-loadgen -p shardline-bench
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/shardline serve --listen 127.0.0.1:$port --data-dir "$dir/data" --set num_partitions=8 ${BROKER_ARGS:-} > "$dir/out" 2> "$dir/err" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.1; done
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
before=$(cpu)
./target/release/shardline-loadgen 127.0.0.1:$port speed 8 "$messages" 1024 -1 5
after=$(cpu)
gb=$(python3 -c "print($messages * 1024 / 1e9)")
python3 -c "print(f'broker CPU: {($after - $before) / $ticks:.1f} s for {2 * $gb:.2f} GB moved (in + out) = {($after - $before) / $ticks / (2 * $gb):.1f} CPU-s/GB')"
echo "broker peak RSS: $(grep VmHWM /proc/$pid/status | awk '{print $2/1024 " MiB"}')"
