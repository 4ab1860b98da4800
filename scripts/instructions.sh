#!/usr/bin/env bash
# The instruction-count gate: runs benches/instructions.rs under callgrind and DHAT (gungraun)
# and fails when a path executes more than 2 % more instructions, or makes 1 % more
# allocations (one more per message is more), than the counts checked in under
# benches/instructions-baseline/. Instruction counts do not
# move with a noisy machine as wall-clock times do (the same run varies by 5-10 % on a shared
# 2-core machine).
#
#   scripts/instructions.sh          # compare with the checked-in counts (the test command runs it)
#   scripts/instructions.sh save     # after an intended change: write new counts, commit them
#                                    # with the reason
#   scripts/instructions.sh table    # each path's cost per message, from the last run
#
# Needs valgrind (scripts/debian-packages.txt); installs the gungraun runner of the version
# Cargo.lock pins into target/gungraun-runner.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASELINE=$ROOT/benches/instructions-baseline
WORK=$ROOT/target/instructions
NAME=checked_in
LIMIT=2%
# Allocations: one more per message is at least +2 % on every path (the most, request/reply,
# makes 45 per round trip); 1 % leaves room for the MQTT paths' few blocks that move between
# runs (the socket's reads), while the in-process paths repeat to the block.
ALLOCATIONS_LIMIT=1%
FEATURES=opentelemetry

log() { printf '\033[1m[instructions]\033[0m %s\n' "$*" >&2; }

if [ "${1:-}" = table ]; then
  exec python3 "$ROOT/scripts/instructions-table.py" "$WORK"
fi

command -v valgrind >/dev/null || { log "valgrind is missing: scripts/install-packages.sh installs it"; exit 1; }

# The runner must be the version of the gungraun library the bench links (exact match).
VERSION=$(cargo metadata --format-version 1 --locked 2>/dev/null \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="gungraun"))')
RUNNER_ROOT=$ROOT/target/gungraun-runner
if [ "$("$RUNNER_ROOT/bin/gungraun-runner" --version 2>/dev/null | awk '{print $2}')" != "$VERSION" ]; then
  log "installing gungraun-runner $VERSION into $RUNNER_ROOT"
  cargo install --locked --quiet --root "$RUNNER_ROOT" gungraun-runner --version "=$VERSION"
fi
export PATH=$RUNNER_ROOT/bin:$PATH
unset GUNGRAUN_RUNNER
# valgrind cannot run code built for this CPU's newest instructions.
export RUSTFLAGS=

rm -rf "$WORK" && mkdir -p "$WORK"
if [ "${1:-}" = save ]; then
  GUNGRAUN_HOME=$WORK cargo bench --locked --features "$FEATURES" --bench instructions -- \
    --save-baseline="$NAME" 2>&1 | tee "$WORK/run.log"
  rm -rf "$BASELINE" && mkdir -p "$BASELINE"
  (cd "$WORK" && find . -name "*.base@$NAME" -exec cp --parents {} "$BASELINE/" \;)
  python3 "$ROOT/scripts/instructions-table.py" "$WORK"
  log "counts written to ${BASELINE#"$ROOT"/}: commit them with the reason"
  exit 0
fi

[ -d "$BASELINE" ] || { log "no checked-in counts in ${BASELINE#"$ROOT"/}: run scripts/instructions.sh save"; exit 1; }
cp -a "$BASELINE/." "$WORK/"
set +e
GUNGRAUN_HOME=$WORK cargo bench --locked --features "$FEATURES" --bench instructions -- \
  --baseline="$NAME" --callgrind-limits="ir=$LIMIT" \
  --dhat-limits="totalblocks=$ALLOCATIONS_LIMIT" 2>&1 | tee "$WORK/run.log"
status=${PIPESTATUS[0]}
set -e
# A path without checked-in counts is compared with nothing and would pass: refuse it.
missing=$(cd "$WORK" && find . -name 'callgrind.*.out' -o -name 'dhat.*.out' | while read -r out; do [ -e "$out.base@$NAME" ] || echo "$out"; done)
if [ -n "$missing" ]; then
  log "paths without checked-in counts (run scripts/instructions.sh save): $missing"
  exit 1
fi
if [ "$status" -ne 0 ]; then
  if grep -qi "regressed" "$WORK/run.log"; then
    log "a path executes more than $LIMIT more instructions, or makes more than $ALLOCATIONS_LIMIT more allocations, than its checked-in counts (above)"
  else
    log "the instruction benches failed to run (exit $status)"
  fi
  exit 1
fi
python3 "$ROOT/scripts/instructions-table.py" "$WORK" || true
log "every path within $LIMIT of its checked-in instructions and $ALLOCATIONS_LIMIT of its allocations"
