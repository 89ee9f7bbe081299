#!/usr/bin/env bash
# Debian's docker-compose (v1) for tests/deploy: `docker-compose config -q`
# validates docker-compose.yml against the Compose schema without a Docker
# daemon. Installed without Recommends, so no docker.io engine comes with it.
set -euo pipefail
if command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "docker-compose is missing; install it with: sudo apt-get install -y --no-install-recommends docker-compose" >&2
  exit 1
fi
echo "== installing Debian docker-compose for the compose validation test"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
