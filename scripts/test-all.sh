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

# --- The module layers (spa-dat/src/lib.rs): an import against their direction fails the run ---
python3 "$ROOT/scripts/check-layers.py"

# --- Debian packages, from the one list scripts/debian-packages.txt (missing ones only) ---
"$ROOT/scripts/install-packages.sh"
# The package's own service is not needed (tests start their brokers); stop it if it runs.
if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto prometheus >/dev/null 2>&1 || true; fi

# --- Throw-away certificates for the security tests (Kafka's SASL_SSL listener, Mosquitto TLS) ---
export SPA_DAT_TEST_CERTS=$STATE/certs
rm -rf "$SPA_DAT_TEST_CERTS"
"$ROOT/scripts/certs.sh" "$SPA_DAT_TEST_CERTS"

# --- The Python spa-dat 0.4.0 for interop tests ---
VENV=$ROOT/target/py-venv
if ! "$VENV/bin/python" -c 'import spa_dat.socket.kafka, spa_dat.socket.mqtt' >/dev/null 2>&1; then
  log "creating $VENV with spa-dat==0.4.0 (PyPI)"
  python3 -m venv "$VENV"
  # spa-dat 0.4.0's aiokafka 0.8 imports kafka.conn, which kafka-python removed after 2.0.2.
  "$VENV/bin/pip" install -q --disable-pip-version-check spa-dat==0.4.0 kafka-python==2.0.2
fi
export SPA_DAT_PYTHON=$VENV/bin/python

# --- FastStream 0.7.8 (MQTT 5 + Kafka) for the FastStream interop tests, in a venv of its own ---
"$ROOT/scripts/faststream-venv.sh" "$ROOT/target/faststream-venv"
export SPA_DAT_FASTSTREAM_PYTHON=$ROOT/target/faststream-venv/bin/python

# --- Apache Kafka 4.1.1 (KRaft, single node) from Maven Central jars, Java from the machine ---
"$ROOT/scripts/kafka.sh" stop "$KAFKA_DIR" || true
rm -rf "$KAFKA_DIR"
log "starting Apache Kafka"
"$ROOT/scripts/kafka.sh" start "$KAFKA_DIR"
export SPA_DAT_KAFKA_BOOTSTRAP
SPA_DAT_KAFKA_BOOTSTRAP=$(cat "$KAFKA_DIR/bootstrap")
export SPA_DAT_KAFKA_SECURE_BOOTSTRAP
SPA_DAT_KAFKA_SECURE_BOOTSTRAP=$(cat "$KAFKA_DIR/secure-bootstrap")
log "Kafka answers on $SPA_DAT_KAFKA_BOOTSTRAP (SASL_SSL: $SPA_DAT_KAFKA_SECURE_BOOTSTRAP)"

# --- The AsyncAPI parser and renderer (npm, scripts/asyncapi/package-lock.json) for tests/asyncapi.rs ---
log "installing the AsyncAPI parser (npm)"
"$ROOT/scripts/asyncapi.sh" install

log "cargo test (all features)"
cargo test --workspace --all-features -- --test-threads="${SPA_DAT_TEST_THREADS:-2}"

# --- The quick start's AsyncAPI document: the committed one (README) is what the code makes
# today, the real parser accepts it, and it renders to HTML ---
log "the quick start's AsyncAPI document against docs/asyncapi/quickstart.json"
mkdir -p "$ROOT/target/asyncapi"
SPA_DAT_ASYNCAPI=$ROOT/target/asyncapi/quickstart.json cargo run -q --example quickstart --all-features >/dev/null
"$ROOT/scripts/asyncapi.sh" validate --strict "$ROOT/target/asyncapi/quickstart.json"
if ! diff -u "$ROOT/docs/asyncapi/quickstart.json" "$ROOT/target/asyncapi/quickstart.json"; then
  log "docs/asyncapi/quickstart.json is out of date: regenerate it (README, 'The contract as a document')"
  exit 1
fi
"$ROOT/scripts/asyncapi.sh" render --no-js "$ROOT/target/asyncapi/quickstart.json" "$ROOT/target/asyncapi/quickstart.html"
grep -q 'thermostat' "$ROOT/target/asyncapi/quickstart.html"

# --- Instruction counts of the per-message paths against the checked-in ones (2 % at most) ---
log "instruction counts against benches/instructions-baseline"
"$ROOT/scripts/instructions.sh"

# --- The public API: any change of spa-dat's public surface is a visible diff of public-api.txt ---
log "public API against spa-dat/public-api.txt"
python3 "$ROOT/scripts/public-api.py" check
