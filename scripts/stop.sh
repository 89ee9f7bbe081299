#!/usr/bin/env bash
# Stop everything `make run` started (serving, pipeline, producer, Kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m runners.local down
