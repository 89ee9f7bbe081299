#!/usr/bin/env bash
# Set-up of benchmarks/compare.py: the project's own set-up (.venv, jars), then
# a separate venv, .cache/bench-venv, with the benchmark-only packages of
# benchmarks/requirements.txt (Quix Streams, py-spy). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || ./scripts/setup.sh
VENV=.cache/bench-venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha"
WANT=$(sha256sum benchmarks/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "== installing benchmark packages into $VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q -r benchmarks/requirements.txt
  echo "$WANT" > "$STAMP"
fi
echo "benchmark venv ready: $VENV (quixstreams $("$VENV/bin/python" -c 'import quixstreams; print(quixstreams.__version__)'))"
