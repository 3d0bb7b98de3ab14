#!/usr/bin/env bash
# End-to-end test of Shardline with kcat (librdkafka's command-line client).
#
# Starts its own broker (private copy of the binary, free loopback port, fresh
# data dir, default of 3 partitions per auto-created topic), runs kcat against
# it, compares output exactly, stops the broker with SIGTERM and checks that it
# exits 0. Every wait is bounded. Last line: "kcat: N passed, M failed".
#
# Environment: SHARDLINE_BIN (default <repo>/target/debug/shardline).
set -uo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
SRC_BIN="${SHARDLINE_BIN:-$REPO/target/debug/shardline}"
KT=15                       # timeout (s) for each kcat call
PASS=0
FAIL=0
WORK="$(mktemp -d -t shardline-kcat-XXXXXX)"
BROKER_PID=""
ZOMBIE_PID=""

die() { echo "kcat: setup failed: $*" >&2; echo "kcat: $PASS passed, $((FAIL + 1)) failed"; exit 1; }

cleanup() {
  if [ -n "$ZOMBIE_PID" ] && kill -0 "$ZOMBIE_PID" 2>/dev/null; then
    kill -KILL "$ZOMBIE_PID" 2>/dev/null
  fi
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -KILL "$BROKER_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v kcat >/dev/null || die "kcat not installed (apt-get install kcat)"

ok()   { PASS=$((PASS + 1)); echo "ok   $1"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL $1"; [ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/     /'; }

# check NAME EXPECTED ACTUAL: exact comparison with a diff on failure.
check() {
  if [ "$2" == "$3" ]; then ok "$1"; else
    fail "$1" "$(diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") | head -40)"
  fi
}
# contains NAME NEEDLE HAYSTACK
contains() {
  if grep -qF -- "$2" <<<"$3"; then ok "$1"; else fail "$1" "missing: $2"$'\n'"in: $3"; fi
}

# --- binary: private copy; wait (bounded) if a rebuild removed it -------------
BIN="$WORK/shardline"
for _ in $(seq 1 90); do
  if [ -x "$SRC_BIN" ] && cp "$SRC_BIN" "$BIN" 2>/dev/null && timeout 20 "$BIN" --version >/dev/null 2>&1; then
    break
  fi
  rm -f "$BIN"; sleep 2
done
[ -x "$BIN" ] || die "no usable broker binary at $SRC_BIN"

# --- broker -------------------------------------------------------------------
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 20000))
  fi
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for attempt in 1 2 3 4 5; do
  PORT="$(free_port)"
  # The broker binds with SO_REUSEPORT: a port another broker holds would be
  # shared silently, so make sure nobody listens there first.
  port_busy "$PORT" && continue
  mkdir -p "$WORK/data"
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --shards 2 \
    --set num_partitions=3 >"$WORK/stdout" 2>"$WORK/stderr" &
  BROKER_PID=$!
  for _ in $(seq 1 150); do
    grep -q "shardline listening on 127.0.0.1:$PORT" "$WORK/stdout" 2>/dev/null && break
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.2
  done
  grep -q "shardline listening on 127.0.0.1:$PORT" "$WORK/stdout" && break
  kill -KILL "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null; BROKER_PID=""
  rm -rf "$WORK/data"
done
[ -n "$BROKER_PID" ] || die "broker did not start: $(tail -20 "$WORK/stderr" 2>/dev/null)"
B="127.0.0.1:$PORT"
echo "broker on $B (pid $BROKER_PID)"

K() { timeout "$KT" kcat -b "$B" -X socket.timeout.ms=10000 "$@"; }

# --- metadata -----------------------------------------------------------------
out="$(K -L 2>&1)"
contains "-L lists the broker" "broker 0 at $B (controller)" "$out"
contains "-L on an empty broker lists no topics" " 0 topics:" "$out"

# --- produce with keys and headers, every codec; consume exactly --------------
FMT='%t|%p|%o|%k|%s|%h|%K|%S\n'
for codec in none gzip snappy lz4 zstd; do
  t="kcat-$codec"
  input=""
  expect=""
  for i in $(seq 0 49); do
    case $((i % 5)) in
      0) v="value-$i";;
      1) v="$(printf 'compressible %.0s' $(seq 1 $((i * 3))))end-$i";;
      2) v="ünïcødé-$i-€";;
      3) v="with spaces and | pipes $i";;
      4) v="$(printf '%0*d' $((i * 40)) "$i")";;
    esac
    k="key-$((i % 7))"
    input+="$k"$'\t'"$v"$'\n'
    expect+="$t|0|$i|$k|$v|h1=one,h2=,h3=x=y|${#k}|$(printf '%s' "$v" | wc -c)"$'\n'
  done
  expect="${expect%$'\n'}"
  printf '%s' "$input" | K -P -t "$t" -p 0 -K $'\t' -z "$codec" \
      -H h1=one -H h2= -H h3=x=y -X acks=all -X linger.ms=5 -X batch.num.messages=16
  rc=$?
  check "-P -z $codec exits 0" "0" "$rc"
  out="$(K -C -t "$t" -p 0 -o beginning -e -q -f "$FMT")"
  # %K/%S print byte lengths; bash's ${#k} counts characters, wc -c bytes.
  check "-C -z $codec: exact messages, keys, headers" "$expect" "$out"
  out="$(K -C -t "$t" -p 0 -o 17 -c 3 -q -f '%o:%k\n')"
  check "-C -z $codec -o 17 -c 3" $'17:key-3\n18:key-4\n19:key-5' "$out"
  out="$(K -C -t "$t" -p 0 -o -2 -e -q -f '%o\n')"
  check "-C -z $codec -o -2 (relative to end)" $'48\n49' "$out"
done

# --- null keys and values (-Z) --------------------------------------------------
t="kcat-nulls"
printf 'k1\tv1\n\tnokey\nk3\t\n\t\n' | K -P -t "$t" -p 1 -K $'\t' -Z
out="$(K -C -t "$t" -p 1 -o beginning -e -q -Z -f '%o|%k|%s|%K|%S|%h\n')"
check "-P/-C -Z null key and value" \
  $'0|k1|v1|2|2|\n1|NULL|nokey|-1|5|\n2|k3|NULL|2|-1|\n3|NULL|NULL|-1|-1|' "$out"

# --- keyed produce to a 3-partition topic: each key in one partition, in order -
t="kcat-keyed"
input=""
for i in $(seq 0 89); do input+="user-$((i % 13))"$'\t'"m$i"$'\n'; done
printf '%s' "$input" | K -P -t "$t" -K $'\t' -z lz4
out="$(K -L -t "$t")"
contains "-L -t shows 3 partitions" "topic \"$t\" with 3 partitions:" "$out"
all=""
for p in 0 1 2; do
  all+="$(K -C -t "$t" -p "$p" -o beginning -e -q -f "$p %o %k %s\n")"$'\n'
done
# Per key: one partition, consecutive messages in produce order.
verdict="$(awk 'NF == 4 {
    n = substr($4, 2) + 0
    if (($3 in part) && part[$3] != $1) bad = bad "key " $3 " in two partitions; "
    part[$3] = $1
    if (($1 in last) && $2 != last[$1] + 1) bad = bad "gap in partition " $1 "; "
    last[$1] = $2
    if (($3 in prev) && n <= prev[$3]) bad = bad "key " $3 " out of order; "
    prev[$3] = n; count++
  } END { print (bad == "" ? "ok " count : bad) }' <<<"$all")"
check "keyed messages: 90 back, one partition per key, in order" "ok 90" "$verdict"
used="$(awk 'NF == 4 { print $1 }' <<<"$all" | sort -u | wc -l)"
check "keyed messages spread over all 3 partitions" "3" "$used"

# --- -Q offset queries ----------------------------------------------------------
t="kcat-query"
printf 'a\n' | K -P -t "$t" -p 0
sleep 1.1
printf 'b\nc\n' | K -P -t "$t" -p 0
ts="$(K -C -t "$t" -p 0 -o beginning -e -q -f '%T\n')"
ts0="$(sed -n 1p <<<"$ts")"; ts1="$(sed -n 2p <<<"$ts")"
check "two batches have increasing timestamps" "yes" "$([ -n "$ts1" ] && [ "$ts1" -gt "$ts0" ] && echo yes || echo "no: $ts")"
check "-Q latest (-1)"   "$t [0] offset 3" "$(K -Q -t "$t:0:-1")"
check "-Q earliest (-2)" "$t [0] offset 0" "$(K -Q -t "$t:0:-2")"
check "-Q first timestamp" "$t [0] offset 0" "$(K -Q -t "$t:0:$ts0")"
check "-Q timestamp of batch 2" "$t [0] offset 1" "$(K -Q -t "$t:0:$ts1")"
check "-Q timestamp between batches" "$t [0] offset 1" "$(K -Q -t "$t:0:$((ts0 + 1))")"
check "-Q timestamp after all" "$t [0] offset -1" "$(K -Q -t "$t:0:$((ts1 + 100000))")"
check "-Q empty partition latest" "$t [2] offset 0" "$(K -Q -t "$t:2:-1")"

# --- metadata again -------------------------------------------------------------
out="$(K -L 2>&1)"
n="$(grep -c '^  topic "kcat-' <<<"$out")"
check "-L lists the 8 topics created" "8" "$n"

# --- transactional producer (-X transactional.id) -------------------------------
# kcat -P with a transactional.id runs init_transactions, begin_transaction,
# produces its input and commits at EOF. librdkafka's consumers default to
# isolation.level=read_committed; the checks name the level explicitly.
RC=(-X isolation.level=read_committed)
RU=(-X isolation.level=read_uncommitted)
t="kcat-txn"
input=""
for i in $(seq 0 29); do input+="k$((i % 5))"$'\t'"t$i"$'\n'; done
out="$(printf '%s' "$input" | K -P -t "$t" -K $'\t' -X transactional.id=kcat-txn-1 2>&1)"
rc=$?
check "-P -X transactional.id exits 0" "0" "$rc"
contains "-P -X transactional.id commits" "Transaction successfully committed" "$out"
all="$(K -C -t "$t" -o beginning -e -q "${RC[@]}" -f '%p %o %k %s\n')"
verdict="$(awk 'NF == 4 {
    n = substr($4, 2) + 0
    if (($3 in part) && part[$3] != $1) bad = bad "key " $3 " in two partitions; "
    part[$3] = $1
    if ($2 != next_off[$1] + 0) bad = bad "partition " $1 " offset " $2 " after " next_off[$1] "; "
    next_off[$1] = $2 + 1
    if (($3 in prev) && n <= prev[$3]) bad = bad "key " $3 " out of order; "
    prev[$3] = n; seen[n]++; count++
  } END {
    for (i = 0; i < 30; i++) if (seen[i] != 1) bad = bad "t" i " seen " seen[i] + 0 " times; "
    print (bad == "" ? "ok " count : bad)
  }' <<<"$all")"
check "read_committed consumer sees the 30 committed messages once, in order" "ok 30" "$verdict"
check "the transaction spans all 3 partitions" "3" "$(awk 'NF == 4 { print $1 }' <<<"$all" | sort -u | wc -l)"
# Each partition ends with the commit marker: latest offset = messages + 1.
for p in 0 1 2; do
  n="$(awk -v p="$p" 'NF == 4 && $1 == p' <<<"$all" | wc -l)"
  check "-Q latest of partition $p after the commit marker" "$t [$p] offset $((n + 1))" "$(K -Q -t "$t:$p:-1")"
done

# A transaction left open by a killed kcat: read_committed consumers see
# nothing of it (the last stable offset holds them back) until the next
# kcat with the same transactional.id fences it (InitProducerId aborts it,
# with an abort marker) and commits its own messages.
t="kcat-txn-zombie"
FIFO="$WORK/zombie.fifo"
mkfifo "$FIFO"
# The read-write open never blocks; kcat reads its input in chunks of some
# tens of kB, so give it 5000 lines and keep the fifo open (no EOF, no commit).
exec 7<>"$FIFO"
# No `timeout` wrapper: the kill below must hit kcat itself (cleanup kills it
# too); its input never ends, so it cannot commit.
kcat -b "$B" -X socket.timeout.ms=10000 -P -t "$t" -p 0 \
  -X transactional.id=kcat-zombie <"$FIFO" >"$WORK/zombie.out" 2>&1 &
ZOMBIE_PID=$!
seq -f 'zombie-%06g' 1 5000 >&7
open_n=0
prev=-1
for _ in $(seq 1 50); do
  sleep 0.3
  open_n="$(K -C -t "$t" -p 0 -o beginning -e -q "${RU[@]}" -f '%o\n' 2>/dev/null | wc -l)"
  [ "$open_n" -gt 0 ] && [ "$open_n" -eq "$prev" ] && break
  prev="$open_n"
done
check "open transaction: read_uncommitted consumer sees its messages" "yes" \
  "$([ "$open_n" -gt 0 ] && echo yes || echo "no: $open_n messages; kcat: $(tail -3 "$WORK/zombie.out")")"
check "open transaction: read_committed consumer sees none" "0" \
  "$(K -C -t "$t" -p 0 -o beginning -e -q "${RC[@]}" -f '%o\n' | wc -l)"
# -Q runs a producer handle: librdkafka warns that isolation.level is a
# consumer property, but its ListOffsets request uses it.
check "open transaction: -Q latest (read_committed) is the last stable offset" "$t [0] offset 0" \
  "$(K -Q -t "$t:0:-1" "${RC[@]}" 2>/dev/null)"
check "open transaction: -Q latest (read_uncommitted) is the high watermark" "$t [0] offset $open_n" \
  "$(K -Q -t "$t:0:-1" "${RU[@]}" 2>/dev/null)"
kill -KILL "$ZOMBIE_PID" 2>/dev/null
{ wait "$ZOMBIE_PID"; } 2>/dev/null  # no "Killed" job notice
ZOMBIE_PID=""
exec 7>&-
out="$(printf 'new-1\nnew-2\n' | K -P -t "$t" -p 0 -X transactional.id=kcat-zombie 2>&1)"
rc=$?
check "-P with the killed producer's transactional.id exits 0" "0" "$rc"
contains "-P with the killed producer's transactional.id commits" "Transaction successfully committed" "$out"
check "read_committed: only the new incarnation's messages, after the abort marker" \
  "$((open_n + 1)) new-1"$'\n'"$((open_n + 2)) new-2" \
  "$(K -C -t "$t" -p 0 -o beginning -e -q "${RC[@]}" -f '%o %s\n')"
out="$(K -C -t "$t" -p 0 -o beginning -e -q "${RU[@]}" -f '%s\n')"
check "read_uncommitted: the aborted messages and the new ones" \
  "$((open_n + 2)) zombie-000001"$'\n'"new-1"$'\n'"new-2" \
  "$(wc -l <<<"$out") $(head -1 <<<"$out")"$'\n'"$(tail -2 <<<"$out")"
check "-Q latest after the commit marker" "$t [0] offset $((open_n + 4))" "$(K -Q -t "$t:0:-1")"

# --- clean shutdown ---------------------------------------------------------------
kill -TERM "$BROKER_PID"
rc=""
for _ in $(seq 1 150); do
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then wait "$BROKER_PID"; rc=$?; break; fi
  sleep 0.2
done
BROKER_PID_DONE="$BROKER_PID"
[ -z "$rc" ] && { kill -KILL "$BROKER_PID" 2>/dev/null; rc="killed after 30 s"; }
BROKER_PID=""
check "broker exits 0 on SIGTERM" "0" "$rc"

errs="$(grep -E 'WARN|ERROR|panicked' "$WORK/stderr" | tail -20)"
if [ -n "$errs" ]; then echo "--- broker WARN/ERROR lines (pid $BROKER_PID_DONE) ---"; echo "$errs"; fi
if [ "$FAIL" -gt 0 ]; then echo "--- broker stderr tail ---"; tail -20 "$WORK/stderr"; fi

echo "kcat: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
