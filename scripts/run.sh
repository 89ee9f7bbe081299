#!/usr/bin/env bash
# The README's run command: set up, then start Kafka, the producer, the pipeline
# on the embedded Flink runner and serving, and print the dashboard URL.
# `make stop` stops everything. RATE (ticks/s) and PORT override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m runners.local up ${RATE:+--rate "$RATE"} ${PORT:+--port "$PORT"}
