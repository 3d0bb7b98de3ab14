#!/usr/bin/env bash
# The engine's throughput next to the disk's own: fio's O_DIRECT sequential
# write speed (1 MiB blocks, io_uring; plain and with an fdatasync every
# 8 MiB) on the same filesystem, then the criterion benchmarks of
# bench/benches/engine.rs. Takes about 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fio >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio; }
dir=${SHARDLINE_BENCH_DIR:-target/bench-data}
mkdir -p "$dir"
fio_run() {
  fio --name=seqwrite --filename="$dir/fio.dat" --rw=write --bs=1M --direct=1 --ioengine=io_uring \
      --size=1G "$@" --output-format=json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"]/2**20))'
  rm -f "$dir/fio.dat"
}
plain=(); synced=()
for _ in 1 2 3; do plain+=("$(fio_run)"); synced+=("$(fio_run --fdatasync=8)"); done
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
echo "fio O_DIRECT sequential write, 1 MiB blocks: $(median "${plain[@]}") MiB/s (runs: ${plain[*]})"
echo "fio same, fdatasync every 8 MiB:            $(median "${synced[@]}") MiB/s (runs: ${synced[*]})"
SHARDLINE_BENCH_DIR="$dir" cargo bench -p shardline-bench --bench engine 2>&1 | grep -E '^(append|read)/|thrpt:  \['
