#!/usr/bin/env bash
# AsyncAPI tooling for spa-dat's generated documents (Node.js, packages pinned in
# scripts/asyncapi/package-lock.json, installed into scripts/asyncapi/node_modules):
#   scripts/asyncapi.sh install                    # npm ci, only when node_modules is missing or from another lock file
#   scripts/asyncapi.sh validate [--strict] FILE...  # the official parser (@asyncapi/parser): every diagnostic printed;
#                                                  # exit 1 when a file has an error (--strict: or a warning), 2 usage/unreadable
#   scripts/asyncapi.sh render [--no-js] IN OUT    # one self-contained HTML page (@asyncapi/react-component, server-side);
#                                                  # exit 1 when IN has errors, 2 usage/unreadable
# validate and render install first. Needs Node.js >= 20.19.5 and npm (the npm registry, once).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/scripts/asyncapi

die() { echo "asyncapi.sh: $*" >&2; exit 2; }

need_tools() {
  command -v node >/dev/null 2>&1 \
    || die "Node.js (node) is not installed: install Node.js 20.19.5 or later with npm (Debian: apt-get install nodejs npm)"
  command -v npm >/dev/null 2>&1 \
    || die "npm is not installed: install it beside Node.js $(node --version) (Debian: apt-get install npm)"
  node -e 'const [a, b, c] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && (b > 19 || (b === 19 && c >= 5))) ? 0 : 1)' \
    || die "Node.js $(node --version) is too old: the pinned packages need 20.19.5 or later"
}

# node_modules/.package-lock.json is npm's record of what it installed, but npm writes it
# before an install is complete, so a marker written after a successful `npm ci` is compared.
# It holds the digest of what was installed from: contents, not dates (a fresh checkout's
# files are all newer than anything).
MARKER=$DIR/node_modules/.asyncapi-sh-installed
wanted() { cat "$DIR/package.json" "$DIR/package-lock.json" | sha256sum | cut -d' ' -f1; }
stale() {
  [ ! -f "$MARKER" ] || [ ! -f "$DIR/node_modules/.package-lock.json" ] \
    || [ "$(cat "$MARKER")" != "$(wanted)" ]
}

install() {
  need_tools
  stale || return 0
  # One install at a time (tests may call this in parallel): lock the lock file itself.
  exec 9<"$DIR/package-lock.json"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if stale; then
    local log
    log=$(mktemp)
    echo "asyncapi.sh: installing the AsyncAPI tools into scripts/asyncapi/node_modules (npm ci)" >&2
    # --ignore-scripts: no package needs an install script; the only one (@scarf/scarf, pulled in
    # by the parser's Spectral) would just send install analytics.
    if ! (cd "$DIR" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund \
          --loglevel=error >"$log" 2>&1); then
      cat "$log" >&2
      rm -f "$log"
      die "npm ci failed in scripts/asyncapi (output above)"
    fi
    rm -f "$log"
    wanted >"$MARKER"
  fi
  exec 9<&-
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  install)
    [ $# -eq 0 ] || die "usage: asyncapi.sh install"
    install ;;
  validate)
    install
    exec node "$DIR/validate.mjs" "$@" ;;
  render)
    install
    exec node "$DIR/render.mjs" "$@" ;;
  *)
    die "usage: asyncapi.sh install | validate [--strict] FILE... | render [--no-js] IN OUT" ;;
esac
