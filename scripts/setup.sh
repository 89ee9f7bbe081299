#!/usr/bin/env bash
# Idempotent set-up shared by `make run` and `make test`: checks prerequisites,
# creates .venv with the pinned packages, resolves the Kafka/Beam jars from Maven.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "error: $*" >&2; exit 1; }

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON" ] || die "Python 3.11 is required (apache-beam 2.62 is pinned): install python3.11 or set PYTHON=/path/to/python3.11"
# Java 17+, javac and Maven: the same checks the commands make (stdlib only, so before .venv).
"$PYTHON" -m runners.local.prereqs

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.requirements.sha
WANT=$(cat requirements.txt requirements-dev.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "== installing Python packages (first run takes a few minutes)"
  .venv/bin/pip install --disable-pip-version-check -q -r requirements-dev.txt
  .venv/bin/pip install --disable-pip-version-check -q --no-deps -e . --config-settings editable_mode=compat
  echo "$WANT" > "$STAMP"
fi

echo "== fetching Kafka and Beam jars (cached under .cache/jars)"
.venv/bin/python -m runners.local fetch
