#!/usr/bin/env bash
# Download Apache Kafka (server + tools) and all runtime dependencies from
# Maven Central into bench/cache/kafka-<version>/libs, using a throwaway pom
# and `mvn dependency:copy-dependencies`. Idempotent: exits at once when the
# cache is already complete (marked by libs/.complete).
# Usage: bench/kafka/fetch.sh [version]   (default: $KAFKA_VERSION or 4.4.0)
# Prints the libs directory on its last line of stdout.
set -euo pipefail
version=${1:-${KAFKA_VERSION:-4.4.0}}
here=$(cd "$(dirname "$0")" && pwd)
cache=$(cd "$here/.." && pwd)/cache/kafka-$version
libs=$cache/libs
if [[ -f $libs/.complete ]]; then
  echo "$libs"
  exit 0
fi
command -v mvn >/dev/null || { echo "fetch.sh: mvn not found" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"; rmdir "$cache" 2>/dev/null || true' EXIT

# Kafka's own artifacts; their compile/runtime deps come along transitively.
# log4j-core + log4j-slf4j-impl (the SLF4J 1.7 binding: Kafka 4.x still
# builds against slf4j-api 1.7.36) give the broker a logging backend (Kafka 4.x
# uses Log4j 2; its binary distribution ships the same jars).
deps=""
for a in kafka_2.13 kafka-server kafka-server-common kafka-tools kafka-tools-api \
         kafka-clients kafka-storage kafka-storage-api kafka-raft kafka-metadata \
         kafka-group-coordinator kafka-group-coordinator-api kafka-coordinator-common \
         kafka-share-coordinator kafka-transaction-coordinator; do
  deps+="<dependency><groupId>org.apache.kafka</groupId><artifactId>$a</artifactId><version>$version</version></dependency>"
done
deps+="<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>\${log4j.version}</version></dependency>"
deps+="<dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>\${log4j.version}</version></dependency>"

cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>shardline.bench</groupId>
  <artifactId>kafka-fetch</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <properties><log4j.version>2.24.3</log4j.version></properties>
  <dependencies>$deps</dependencies>
</project>
POM

start=$(date +%s)
# -B batch mode, -q quiet; runtime scope = compile + runtime deps, no tests.
timeout 900 mvn -B -q -Dstyle.color=never -f "$work/pom.xml" \
  org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$work/libs" > "$work/mvn.log" 2>&1 \
  || { cat "$work/mvn.log" >&2; echo "fetch.sh: mvn failed" >&2; exit 1; }
n=$(ls "$work/libs"/*.jar | wc -l)
ls "$work/libs/kafka_2.13-$version.jar" "$work/libs/kafka-server-$version.jar" \
   "$work/libs/kafka-tools-$version.jar" >/dev/null
rm -rf "$libs"
mv "$work/libs" "$libs"
touch "$libs/.complete"
echo "fetch.sh: Kafka $version: $n jars in $libs ($(( $(date +%s) - start )) s)" >&2
echo "$libs"
