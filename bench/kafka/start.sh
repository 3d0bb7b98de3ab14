#!/usr/bin/env bash
# Run Apache Kafka (from bench/kafka/fetch.sh's cache) as a single-node KRaft
# broker+controller on 127.0.0.1, in the foreground, for side-by-side benchmarks.
#
# Usage: bench/kafka/start.sh <data_dir> <port> [--heap 1G] [--fsync-every-message]
#                             [--set key=value]...
#   <data_dir>/server.properties   generated config
#   <data_dir>/logs                log.dirs (partition data + KRaft metadata log)
#   <data_dir>/server-logs/        broker logs: server.log (log4j), kafka.out (JVM stdout/stderr)
# Env: KAFKA_VERSION (default 4.4.0), JAVA (default $JAVA_HOME/bin/java or java),
#      KAFKA_LOG_LEVEL (root log4j level, default INFO).
#
# Prints "kafka pid <PID>" at once and "kafka ready 127.0.0.1:<port>" once the
# port accepts connections and the broker logged "Kafka Server started"; exits 1
# (killing the JVM) if that takes over 60 s. Then waits for the JVM and exits with
# its status; SIGTERM/SIGINT to this script are forwarded to the JVM.
set -euo pipefail
usage() { sed -n '5,6p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
data_dir=$1 port=$2; shift 2
heap=1G fsync=0 extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --heap) heap=${2:?--heap needs a size}; shift 2 ;;
    --heap=*) heap=${1#*=}; shift ;;
    --fsync-every-message) fsync=1; shift ;;
    --set) extra+=("${2:?--set needs key=value}"); shift 2 ;;
    *) usage ;;
  esac
done
[[ $port =~ ^[0-9]+$ ]] || usage
here=$(cd "$(dirname "$0")" && pwd)
version=${KAFKA_VERSION:-4.4.0}
libs=$("$here/fetch.sh" "$version" | tail -n 1)
if [[ -n ${JAVA:-} ]]; then java=$JAVA
elif [[ -n ${JAVA_HOME:-} ]]; then java=$JAVA_HOME/bin/java
else java=java; fi

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
if port_open "$port"; then echo "start.sh: port $port is already in use" >&2; exit 1; fi

mkdir -p "$data_dir/logs" "$data_dir/server-logs"
data_dir=$(cd "$data_dir" && pwd)
# The controller endpoint is recorded in the formatted metadata log (dynamic
# quorum), so a restart on the same data_dir reuses the port chosen first.
if [[ -f $data_dir/controller.port ]]; then
  cport=$(cat "$data_dir/controller.port")
  if port_open "$cport"; then echo "start.sh: controller port $cport is in use" >&2; exit 1; fi
else
  cport=$(free_port)
  while [[ $cport == "$port" ]]; do cport=$(free_port); done
  echo "$cport" > "$data_dir/controller.port"
fi

props=$data_dir/server.properties
cat > "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir/logs
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
if [[ $fsync == 1 ]]; then
  # Broker-wide default for the topic config flush.messages: fsync every message.
  echo "log.flush.interval.messages=1" >> "$props"
fi
for kv in ${extra[@]+"${extra[@]}"}; do echo "$kv" >> "$props"; done

log_dir=$data_dir/server-logs
log4j=$data_dir/log4j2.properties
cat > "$log4j" <<LOG4J
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $log_dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${KAFKA_LOG_LEVEL:-INFO}
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
LOG4J

cp=$libs/'*'
if [[ ! -f $data_dir/logs/meta.properties ]]; then
  cluster_id=$(python3 -c '
import base64, os
while True:
    s = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not s.startswith("-"): print(s); break')
  timeout 60 "$java" -Xmx256M -Dlog4j2.configurationFile="$log4j" -cp "$cp" kafka.tools.StorageTool \
    format --config "$props" --cluster-id "$cluster_id" --standalone --ignore-formatted \
    > "$log_dir/format.out" 2>&1 || { cat "$log_dir/format.out" >&2; exit 1; }
fi

# JVM flags as in Kafka's bin/kafka-run-class.sh + kafka-server-start.sh.
"$java" -Xms"$heap" -Xmx"$heap" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 \
  -Djava.awt.headless=true -Dkafka.logs.dir="$log_dir" -Dlog4j2.configurationFile="$log4j" \
  -cp "$cp" kafka.Kafka "$props" > "$log_dir/kafka.out" 2>&1 &
pid=$!
echo "kafka pid $pid"
trap 'kill -TERM $pid 2>/dev/null' TERM INT

deadline=$((SECONDS + 60))
until port_open "$port" && grep -q 'Kafka Server started' "$log_dir/server.log" 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: Kafka exited during startup; see $log_dir" >&2
    tail -n 20 "$log_dir/kafka.out" "$log_dir/server.log" >&2 2>/dev/null || true
    exit 1
  fi
  if (( SECONDS >= deadline )); then
    echo "start.sh: Kafka not up on 127.0.0.1:$port within 60 s; killing $pid; see $log_dir" >&2
    kill -TERM "$pid" 2>/dev/null; sleep 5; kill -KILL "$pid" 2>/dev/null || true
    exit 1
  fi
  sleep 0.2
done
echo "kafka ready 127.0.0.1:$port ($SECONDS s)"
# `wait` returns early when a trapped signal arrives; keep waiting until the JVM is gone.
set +e
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
wait "$pid"; status=$?
echo "kafka exited with status $status"
exit "$status"
