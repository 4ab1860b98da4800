#!/usr/bin/env bash
# The Python venv with FastStream 0.7.8 (MQTT 5 via zmqtt, Kafka via aiokafka) for the FastStream
# interop scripts tests/python/faststream_*.py:
#   scripts/faststream-venv.sh [VENV_DIR]    # default target/faststream-venv
# Its own venv: FastStream's aiokafka 0.14 conflicts with the aiokafka 0.8 of the Python spa-dat
# (target/py-venv). Pins in tests/python/faststream-requirements.txt, from PyPI. Does nothing when
# the venv already imports faststream.mqtt and faststream.kafka at the pinned FastStream version.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$ROOT/target/faststream-venv}
REQUIREMENTS=$ROOT/tests/python/faststream-requirements.txt
VERSION=$(sed -n 's/^faststream\[[^]]*\]==\([^ ]*\).*/\1/p' "$REQUIREMENTS")
[ -n "$VERSION" ] || { echo "faststream-venv.sh: no faststream pin in $REQUIREMENTS" >&2; exit 1; }

works() {
  "$VENV/bin/python" -c "
import importlib.metadata, sys
import faststream.mqtt, faststream.kafka
sys.exit(importlib.metadata.version('faststream') != sys.argv[1])" "$VERSION" >/dev/null 2>&1
}

works && exit 0
echo "faststream-venv.sh: creating $VENV with faststream==$VERSION (PyPI)" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS"
works || { echo "faststream-venv.sh: $VENV cannot import faststream.mqtt and faststream.kafka $VERSION" >&2; exit 1; }
