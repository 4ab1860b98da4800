#!/usr/bin/env bash
# Installs the Debian packages of scripts/debian-packages.txt that are missing; does nothing
# (and needs no network) when all are there. Run as root, or with sudo on PATH.
set -euo pipefail
LIST=$(cd "$(dirname "$0")" && pwd)/debian-packages.txt

missing=()
while read -r package _; do
  [ -n "$package" ] || continue
  case $package in '#'*) continue ;; esac
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done < "$LIST"
[ ${#missing[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null || {
  echo "install-packages.sh: missing ${missing[*]}, and there is no apt-get: install them by hand" >&2
  exit 1
}
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "install-packages.sh: installing ${missing[*]} (Debian packages)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
