#!/usr/bin/env bash
# Cold build time of the quick start, as a new user pays it: each feature set built from
# nothing into its own temporary target directory (crates already downloaded: `cargo fetch`
# first). Prints wall and CPU seconds, and each build's ratio to the in-process-bus-only build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fetch -q
declare -A wall
for features in "default" "mqtt" "none"; do
  dir=$(mktemp -d)
  case $features in
    default) args=() ;;
    mqtt) args=(--no-default-features --features mqtt) ;;
    none) args=(--no-default-features) ;;
  esac
  TIMEFORMAT='%R %U %S'
  # bash's own `time`: its report to a file, cargo's output to the terminal.
  { time cargo build -q --example quickstart "${args[@]}" --target-dir "$dir/target" 2>&3 ; } 3>&2 2> "$dir/times"
  read -r real user sys < "$dir/times"
  wall[$features]=$real
  printf '%-8s %6.1f s wall  %6.1f s CPU\n' "$features" "$real" "$(awk -v a="$user" -v b="$sys" 'BEGIN { print a + b }')"
  rm -rf "$dir"
done
for features in default mqtt; do
  printf '%-8s %.2fx the in-process-bus-only build\n' "$features" "$(awk -v a="${wall[$features]}" -v b="${wall[none]}" 'BEGIN { print a / b }')"
done
