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

cleanup() {
  for pidfile in "$STATE"/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
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
if ! "$VENV/bin/python" -c 'import spa_dat' >/dev/null 2>&1; then
  log "creating $VENV with spa-dat==0.4.0 (PyPI)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check spa-dat==0.4.0
fi
export SPA_DAT_PYTHON=$VENV/bin/python

log "cargo test (all features)"
cargo test --workspace --all-features -- --test-threads="${SPA_DAT_TEST_THREADS:-2}"
