#!/usr/bin/env bash
# The README's test command: set up, start Kafka, run the whole suite, stop what it started.
# Extra arguments go to pytest, e.g. `make test ARGS='-m "not e2e"'`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/browser.sh || echo "warning: no headless Chromium; browser tests will skip (fail with CI=true)" >&2
./scripts/postgres.sh || echo "warning: no PostgreSQL; the PostgreSQL store tests will skip (fail with CI=true)" >&2
./scripts/compose.sh || echo "warning: no docker-compose; the compose schema check will skip (fail with CI=true)" >&2

STARTED_KAFKA=0
if ! .venv/bin/python -m runners.local status --kafka >/dev/null; then
  STARTED_KAFKA=1
fi
cleanup() {
  if [ "$STARTED_KAFKA" = 1 ]; then .venv/bin/python -m runners.local stop || true; fi
}
trap cleanup EXIT
.venv/bin/python -m runners.local start

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
fi
exit "$rc"
