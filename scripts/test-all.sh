#!/usr/bin/env bash
# Runs every test of the workspace, including those against real brokers. On a fresh machine it
# installs what the tests need (Debian packages, the Python spa-dat for interop), starts the
# brokers on free loopback ports, runs `cargo test`, and stops the brokers again. A broker that
# cannot be started fails the run: broker tests never pass silently without their broker.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/target/test-brokers
mkdir -p "$STATE"

log() { printf '\033[1m[test-all]\033[0m %s\n' "$*" >&2; }

KAFKA_DIR=$STATE/kafka-shared
cleanup() {
  "$ROOT/scripts/kafka.sh" stop "$KAFKA_DIR" || true
}
trap cleanup EXIT

export SPA_DAT_BROKER_STATE=$STATE

# --- System packages: Mosquitto (each MQTT test starts its own instance on a free port) ---
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  log "installing mosquitto (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
if ! command -v mosquitto_passwd >/dev/null 2>&1; then
  log "mosquitto_passwd missing"; exit 1
fi
# The package's own service is not needed (tests start their brokers); stop it if it runs.
if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto >/dev/null 2>&1 || true; fi

# --- The Python spa-dat 0.4.0 for interop tests ---
VENV=$ROOT/target/py-venv
if ! "$VENV/bin/python" -c 'import spa_dat.socket.kafka, spa_dat.socket.mqtt' >/dev/null 2>&1; then
  log "creating $VENV with spa-dat==0.4.0 (PyPI)"
  python3 -m venv "$VENV"
  # spa-dat 0.4.0's aiokafka 0.8 imports kafka.conn, which kafka-python removed after 2.0.2.
  "$VENV/bin/pip" install -q --disable-pip-version-check spa-dat==0.4.0 kafka-python==2.0.2
fi
export SPA_DAT_PYTHON=$VENV/bin/python

# --- Apache Kafka 4.1.1 (KRaft, single node) from Maven Central jars, Java from the machine ---
command -v java >/dev/null 2>&1 || { log "Java is needed for Kafka"; exit 1; }
if ! command -v mvn >/dev/null 2>&1; then
  log "installing maven (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null
fi
"$ROOT/scripts/kafka.sh" stop "$KAFKA_DIR" || true
rm -rf "$KAFKA_DIR"
log "starting Apache Kafka"
"$ROOT/scripts/kafka.sh" start "$KAFKA_DIR"
export SPA_DAT_KAFKA_BOOTSTRAP
SPA_DAT_KAFKA_BOOTSTRAP=$(cat "$KAFKA_DIR/bootstrap")
log "Kafka answers on $SPA_DAT_KAFKA_BOOTSTRAP"

# --- librdkafka is built from source by rdkafka-sys (CMake, a C compiler, zlib) ---
for tool in cmake cc make; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential cmake zlib1g-dev >/dev/null
    break
  fi
done

log "cargo test (all features)"
cargo test --workspace --all-features -- --test-threads="${SPA_DAT_TEST_THREADS:-2}"
