#!/usr/bin/env bash
# PostgreSQL server binaries (initdb, pg_ctl) for the serving store's tests, from Debian's packages
# (as root). The tests start their own server in a temporary folder; nothing is started here.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "PostgreSQL is missing; install it with: sudo apt-get install -y postgresql" >&2
  exit 1
fi
echo "== installing Debian postgresql for the serving store tests"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
