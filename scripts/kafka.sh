#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft) on loopback, from Maven Central jars.
#   scripts/kafka.sh fetch              # jars into target/kafka/libs (cached)
#   scripts/kafka.sh start DIR [PORT]   # config, storage format (first time), start, wait until ready
#   scripts/kafka.sh stop DIR           # stop (SIGTERM, then SIGKILL after 30 s)
# DIR keeps the config, data, log and pid; a restart with the same DIR keeps the data.
# The broker's address is written to DIR/bootstrap.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIBS=${SPA_DAT_KAFKA_LIBS:-$ROOT/target/kafka/libs}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

fetch() {
  if [ -f "$LIBS/kafka_2.13-4.1.1.jar" ] && [ -f "$LIBS/log4j-slf4j-impl-2.24.3.jar" ]; then return; fi
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is needed to fetch Kafka's jars" >&2; exit 1; }
  command -v java >/dev/null || { echo "kafka.sh: Java 17+ is needed to run Kafka" >&2; exit 1; }
  echo "kafka.sh: fetching Apache Kafka 4.1.1 from Maven Central into $LIBS" >&2
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies -Dkafka.libs="$LIBS"
}

java_run() { java -Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" -cp "$LIBS/*" "$@"; }

start() {
  local dir=$1 port=${2:-} cport
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "kafka.sh: already running in $dir" >&2; return
  fi
  if [ ! -f "$dir/server.properties" ]; then
    port=${port:-$(free_port)}
    cport=$(free_port)
    sed -e "s|{port}|$port|g" -e "s|{controller_port}|$cport|g" -e "s|{dir}|$dir|g" \
      "$ROOT/scripts/kafka/server.properties" > "$dir/server.properties"
    echo "127.0.0.1:$port" > "$dir/bootstrap"
  fi
  port=$(cut -d: -f2 < "$dir/bootstrap")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster
    cluster=$(java_run kafka.tools.StorageTool random-uuid)
    java_run kafka.tools.StorageTool format --cluster-id "$cluster" --config "$dir/server.properties" >> "$dir/kafka.log" 2>&1
  fi
  LOG_DIR="$dir" nohup java -Xms256m -Xmx768m -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" >> "$dir/kafka.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then exec 3>&- 3<&- 2>/dev/null || true; return; fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "kafka.sh: Kafka exited; its log:" >&2; tail -50 "$dir/kafka.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "kafka.sh: Kafka did not answer on 127.0.0.1:$port within 60 s" >&2; tail -50 "$dir/kafka.log" >&2; exit 1
}

stop() {
  local dir=$1 pid
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:?DIR}" "${3:-}" ;;
  stop) stop "${2:?DIR}" ;;
  *) echo "usage: $0 fetch | start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac
