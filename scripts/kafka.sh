#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft) on loopback, from Maven Central jars.
#   scripts/kafka.sh fetch              # jars into target/kafka/libs (cached)
#   scripts/kafka.sh start DIR [PORT]   # config, storage format (first time), start, wait until ready
#   scripts/kafka.sh stop DIR           # stop (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh cluster-start DIR  # a 3-node cluster (PLAINTEXT, 3 replicas, min ISR 2): DIR/node1..3
#   scripts/kafka.sh node-kill DIR N    # kill -9 node N of the cluster
#   scripts/kafka.sh node-start DIR N   # start node N again (same data)
#   scripts/kafka.sh cluster-stop DIR   # stop every node
# DIR keeps the config, data, log and pid; a restart with the same DIR keeps the data.
# Two listeners: PLAINTEXT (address in DIR/bootstrap; a super user, no ACLs apply) and SASL_SSL
# (DIR/secure-bootstrap): TLS with the certificates of scripts/certs.sh (SPA_DAT_TEST_CERTS, or
# DIR/certs), SCRAM-SHA-512 or unsecured-JWT OAUTHBEARER, and these test users and ACLs:
#   admin / admin-secret   super user
#   alice / alice-secret   everything on topics and groups whose names start with `secure.`
#   bob   / bob-secret     write and describe `secure.*` topics, read `secure.*` groups: no topic READ
# OAUTHBEARER tokens name their principal themselves (`sub`): sub=alice gets alice's ACLs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIBS=${SPA_DAT_KAFKA_LIBS:-$ROOT/target/kafka/libs}

SCRAM_USERS=(admin:admin-secret alice:alice-secret bob:bob-secret)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

fetch() {
  if [ -f "$LIBS/kafka_2.13-4.1.1.jar" ] && [ -f "$LIBS/log4j-slf4j-impl-2.24.3.jar" ] \
    && [ -f "$LIBS/kafka-tools-4.1.1.jar" ]; then return; fi
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is needed to fetch Kafka's jars" >&2; exit 1; }
  command -v java >/dev/null || { echo "kafka.sh: Java 17+ is needed to run Kafka" >&2; exit 1; }
  echo "kafka.sh: fetching Apache Kafka 4.1.1 from Maven Central into $LIBS" >&2
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies -Dkafka.libs="$LIBS"
}

# Starts the broker configured in DIR (config, storage formatted) and waits until PORT answers.
launch() {
  local dir=$1 port=$2 heap=${3:-768m}
  LOG_DIR="$dir" nohup java -Xms256m -Xmx"$heap" -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" >> "$dir/kafka.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 900); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      exec 3>&- 3<&- 2>/dev/null || true
      return
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "kafka.sh: Kafka exited; its log:" >&2; tail -50 "$dir/kafka.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "kafka.sh: Kafka did not answer on 127.0.0.1:$port within 90 s" >&2; tail -50 "$dir/kafka.log" >&2; exit 1
}

java_run() { java -Xms256m -Xmx768m -XX:+UseG1GC -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" -cp "$LIBS/*" "$@"; }

start() {
  local dir=$1 port=${2:-} cport sport certs
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  certs=${SPA_DAT_TEST_CERTS:-$dir/certs}
  "$ROOT/scripts/certs.sh" "$certs"
  certs=$(cd "$certs" && pwd)
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "kafka.sh: already running in $dir" >&2; return
  fi
  if [ ! -f "$dir/server.properties" ]; then
    port=${port:-$(free_port)}
    cport=$(free_port)
    sport=$(free_port)
    sed -e "s|{port}|$port|g" -e "s|{controller_port}|$cport|g" -e "s|{secure_port}|$sport|g" \
      -e "s|{dir}|$dir|g" -e "s|{certs}|$certs|g" -e "s|{store_password}|$(cat "$certs/store-password")|g" \
      "$ROOT/scripts/kafka/server.properties" > "$dir/server.properties"
    chmod 600 "$dir/server.properties"
    echo "127.0.0.1:$port" > "$dir/bootstrap"
    echo "127.0.0.1:$sport" > "$dir/secure-bootstrap"
  fi
  port=$(cut -d: -f2 < "$dir/bootstrap")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster
    cluster=$(java_run kafka.tools.StorageTool random-uuid)
    local scram=() user
    for user in "${SCRAM_USERS[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=${user%%:*},password=${user#*:}]")
    done
    java_run kafka.tools.StorageTool format --cluster-id "$cluster" --config "$dir/server.properties" \
      "${scram[@]}" >> "$dir/kafka.log" 2>&1
  fi
  launch "$dir" "$port"
  if [ ! -f "$dir/acls" ] && ! create_acls "$dir" "$port"; then
    echo "kafka.sh: creating the test ACLs failed; the log:" >&2; tail -30 "$dir/kafka.log" >&2; exit 1
  fi
}

# A 3-node cluster in DIR/node1..3; DIR/bootstrap lists the three brokers.
cluster_start() {
  local dir=$1 n
  fetch
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ ! -f "$dir/bootstrap" ]; then
    local ports=() cports=() voters="" cluster
    for n in 1 2 3; do ports+=("$(free_port)"); cports+=("$(free_port)"); done
    for n in 1 2 3; do voters+="${voters:+,}$n@127.0.0.1:${cports[$((n-1))]}"; done
    cluster=$(java_run kafka.tools.StorageTool random-uuid)
    for n in 1 2 3; do
      mkdir -p "$dir/node$n"
      sed -e "s|{node_id}|$n|g" -e "s|{port}|${ports[$((n-1))]}|g" \
        -e "s|{controller_port}|${cports[$((n-1))]}|g" -e "s|{voters}|$voters|g" \
        -e "s|{dir}|$dir/node$n|g" "$ROOT/scripts/kafka/cluster.properties" > "$dir/node$n/server.properties"
      echo "${ports[$((n-1))]}" > "$dir/node$n/port"
      java_run kafka.tools.StorageTool format --cluster-id "$cluster" \
        --config "$dir/node$n/server.properties" >> "$dir/node$n/kafka.log" 2>&1
    done
    echo "127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}" > "$dir/bootstrap"
  fi
  # Started together: a node waits for a quorum of controllers before its port answers.
  for n in 1 2 3; do node_start "$dir" "$n" & done
  wait
}

node_start() {
  local dir=$1 n=$2
  if [ -f "$dir/node$n/pid" ] && kill -0 "$(cat "$dir/node$n/pid")" 2>/dev/null; then return; fi
  launch "$dir/node$n" "$(cat "$dir/node$n/port")" 512m
}

node_kill() {
  local dir=$1 n=$2
  [ -f "$dir/node$n/pid" ] || return 0
  kill -9 "$(cat "$dir/node$n/pid")" 2>/dev/null || true
  rm -f "$dir/node$n/pid"
}

# The ACLs of the test users (see the top), once per DIR; ACLs live in the cluster's metadata.
create_acls() {
  local dir=$1 port=$2
  local acl=(org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:$port" --add --force --resource-pattern-type prefixed)
  java_run "${acl[@]}" --allow-principal User:alice --operation All --topic secure. --group secure. >> "$dir/kafka.log" 2>&1 || return 1
  java_run "${acl[@]}" --allow-principal User:bob --operation Write --operation Describe --topic secure. >> "$dir/kafka.log" 2>&1 || return 1
  java_run "${acl[@]}" --allow-principal User:bob --operation Read --group secure. >> "$dir/kafka.log" 2>&1 || return 1
  touch "$dir/acls"
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
  cluster-start) cluster_start "${2:?DIR}" ;;
  cluster-stop) for n in 1 2 3; do stop "${2:?DIR}/node$n"; done ;;
  node-kill) node_kill "${2:?DIR}" "${3:?N}" ;;
  node-start) node_start "${2:?DIR}" "${3:?N}" ;;
  *) echo "usage: $0 fetch | start DIR [PORT] | stop DIR | cluster-start DIR | cluster-stop DIR | node-kill DIR N | node-start DIR N" >&2; exit 2 ;;
esac
