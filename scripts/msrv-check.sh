#!/usr/bin/env bash
# Checks that spa-dat builds with the oldest Rust it declares (`rust-version` in Cargo.toml), as
# a user on that Rust gets it: dependencies resolved to versions that support it (what Cargo's
# MSRV-aware resolver, resolver = "3", picks), every feature set. The repository's own
# Cargo.lock follows the pinned toolchain (rust-toolchain.toml), so the check runs on a copy.
# Installs the toolchain with rustup if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$msrv" ] || { echo "msrv-check.sh: no rust-version in Cargo.toml" >&2; exit 1; }
toolchain=$msrv
# rustup names a bare "1.85" after its latest patch release; ask for the .0 it declares.
case $toolchain in *.*.*) ;; *) toolchain=$toolchain.0 ;; esac
rustup toolchain list | grep -q "^$toolchain" || rustup toolchain install "$toolchain" --profile minimal
copy=$ROOT/target/msrv/src
rm -rf "$copy" && mkdir -p "$copy"
# The tracked files as they are in the work tree (uncommitted changes included).
git ls-files -z | tar --null -T - -c | tar -x -C "$copy"
cd "$copy"
rm -f rust-toolchain.toml
export CARGO_TARGET_DIR=$ROOT/target/msrv/target
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo "+$toolchain" update -q
for features in "--all-features" "--no-default-features" "--no-default-features --features mqtt" "--no-default-features --features kafka"; do
  echo "msrv-check.sh: Rust $toolchain, spa-dat $features" >&2
  # shellcheck disable=SC2086
  cargo "+$toolchain" check -q -p spa-dat -p spa-dat-macros $features
done
echo "msrv-check.sh: spa-dat builds with Rust $toolchain" >&2
