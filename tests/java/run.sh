#!/usr/bin/env bash
# End-to-end tests of Shardline with the Java Kafka client (kafka-clients 4.1.1) and
# Kafka's CLI tools. Needs the broker binary (default: ../../target/debug/shardline,
# override with SHARDLINE_BIN=/path/to/shardline); installs Java 17 and Maven on a
# fresh Debian machine if they are missing. Maven fetches dependencies from Maven Central.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends openjdk-17-jdk-headless maven
    else
        echo "run.sh: needs a JDK (17+) and Maven on PATH" >&2
        exit 2
    fi
fi

BIN="${SHARDLINE_BIN:-$PWD/../../target/debug/shardline}"
if [ ! -x "$BIN" ]; then
    echo "run.sh: broker binary not found or not executable: $BIN (build it: cargo build)" >&2
    exit 2
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# A hung test fails on its own JUnit timeout (junit-platform.properties); the whole forked
# test JVM is killed after SUREFIRE_TIMEOUT seconds, and `timeout` bounds Maven itself.
rm -rf target/surefire-reports target/broker-logs
SUREFIRE_TIMEOUT="${SUREFIRE_TIMEOUT:-900}"
exec timeout --kill-after=30 "$((SUREFIRE_TIMEOUT + 600))" \
    mvn -q -B -Dstyle.color=never test \
    -Dshardline.bin="$BIN" \
    -Dsurefire.timeout="$SUREFIRE_TIMEOUT" \
    -Dsurefire.exitTimeout=30 \
    "$@"
