"""Serving configuration: defaults from market.config, overridden by environment or flags.

Each setting has a Flask config key, a command-line flag and an environment
variable (the flag name in upper case, as DESIGN.md §9 asks; the bootstrap
servers use KAFKA_BOOTSTRAP_SERVERS like every other part).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from market import config as mc


# Limits for hostile or broken clients (issue 13); docs/serving.md explains each.
WS_QUEUE_BYTES = 1024 * 1024
WS_MAX_CONNECTIONS = 1000      # below gunicorn's --threads (1100), which also serve REST
WS_MAX_SYMBOLS = 1000
WS_MESSAGE_RATE = 20.0
WS_MESSAGE_BURST = 40
WS_ALLOWED_ORIGINS = "self,localhost"


@dataclass(frozen=True)
class Setting:
    """One configurable value: Flask key, flag, environment variable, type, default, help."""

    key: str
    flag: str
    env: str
    type: Callable[[str], Any]
    default: Any
    help: str


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


SETTINGS: tuple[Setting, ...] = (
    Setting("KAFKA_BOOTSTRAP_SERVERS", "--bootstrap_servers", mc.ENV_BOOTSTRAP_SERVERS, str,
            mc.DEFAULT_BOOTSTRAP_SERVERS, "Kafka bootstrap servers"),
    Setting("TRENDS_TOPIC", "--output_topic", "OUTPUT_TOPIC", str, mc.TRENDS_TOPIC,
            "topic of bars (the pipeline's output topic)"),
    Setting("ALERTS_TOPIC", "--alerts_topic", "ALERTS_TOPIC", str, mc.ALERTS_TOPIC, "topic of alerts"),
    Setting("HISTORY_HOURS", "--history_hours", "HISTORY_HOURS", float, mc.SERVING_HISTORY_HOURS,
            "hours of both topics replayed on start (by record timestamp)"),
    Setting("BARS_PER_SYMBOL", "--bars_per_symbol", "BARS_PER_SYMBOL", int, mc.SERVING_BARS_PER_SYMBOL,
            "bars (windows) kept in memory per symbol"),
    Setting("ALERTS_KEPT", "--alerts_kept", "ALERTS_KEPT", int, mc.SERVING_ALERTS_KEPT,
            "most recent alerts kept in memory"),
    Setting("WS_QUEUE_BYTES", "--ws_queue_bytes", "WS_QUEUE_BYTES", int, WS_QUEUE_BYTES,
            "bytes a WebSocket client may have waiting before it is closed with 1008"),
    Setting("WS_MAX_CONNECTIONS", "--ws_max_connections", "WS_MAX_CONNECTIONS", int, WS_MAX_CONNECTIONS,
            "WebSocket connections at once; one more is closed with 1013 (try again later)"),
    Setting("WS_MAX_SYMBOLS", "--ws_max_symbols", "WS_MAX_SYMBOLS", int, WS_MAX_SYMBOLS,
            "symbols one WebSocket client may name per channel (\"*\" counts as none)"),
    Setting("WS_MESSAGE_RATE", "--ws_message_rate", "WS_MESSAGE_RATE", float, WS_MESSAGE_RATE,
            "client messages per second one WebSocket may send on average (more: closed with 1008)"),
    Setting("WS_MESSAGE_BURST", "--ws_message_burst", "WS_MESSAGE_BURST", int, WS_MESSAGE_BURST,
            "client messages one WebSocket may send at once"),
    Setting("WS_ALLOWED_ORIGINS", "--ws_allowed_origins", "WS_ALLOWED_ORIGINS", str, WS_ALLOWED_ORIGINS,
            "comma-separated Origins a browser may open /ws from: 'self' (the Host the request names), "
            "'localhost' (any port on localhost, 127.0.0.1, [::1]), exact origins like "
            "https://dash.example.com, or '*'"),
    Setting("WS_HEARTBEAT_S", "--ws_heartbeat_s", "WS_HEARTBEAT_S", float, mc.WS_HEARTBEAT_S,
            "seconds between heartbeat messages"),
    Setting("WS_PING_INTERVAL_S", "--ws_ping_interval_s", "WS_PING_INTERVAL_S", float, mc.WS_PING_INTERVAL_S,
            "seconds between WebSocket protocol pings (a client missing a pong is closed)"),
    Setting("WS_MAX_MESSAGE_BYTES", "--ws_max_message_bytes", "WS_MAX_MESSAGE_BYTES", int,
            mc.WS_MAX_MESSAGE_BYTES, "largest client message accepted"),
    Setting("WS_SEND_BUFFER_BYTES", "--ws_send_buffer_bytes", "WS_SEND_BUFFER_BYTES", int,
            mc.WS_SEND_BUFFER_BYTES, "kernel send buffer per WebSocket (0 = system default)"),
    Setting("WS_CLOSE_GRACE_S", "--ws_close_grace_s", "WS_CLOSE_GRACE_S", float, mc.WS_CLOSE_GRACE_S,
            "seconds an evicted client (overflow, rate limit) gets to take its close frame before the socket is cut"),
    Setting("CONSUME", "--consume", "CONSUME", _bool, True,
            "run the Kafka consumer (off only for tests that feed the store directly)"),
    # DESIGN.md §10 (market/kafka_security.py checks and maps them). The
    # built-in defaults are empty, so --help never shows a password.
    *(Setting(env, f"--{name}", env, str, None, help)
      for name, env, help in (
          ("security_protocol", "KAFKA_SECURITY_PROTOCOL", "Kafka security protocol: PLAINTEXT, SSL, "
                                                           "SASL_PLAINTEXT or SASL_SSL (unset: PLAINTEXT)"),
          ("sasl_mechanism", "KAFKA_SASL_MECHANISM", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
          ("sasl_username", "KAFKA_SASL_USERNAME", "SASL user name"),
          ("sasl_password", "KAFKA_SASL_PASSWORD", "SASL password (prefer the environment variable)"),
          ("ssl_ca_location", "KAFKA_SSL_CA_LOCATION", "CA bundle (PEM) that verifies the brokers"))),
)


def defaults() -> dict[str, Any]:
    """Every setting at its built-in default."""
    return {s.key: s.default for s in SETTINGS}


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings from environment variables, defaults for the rest; raises ValueError on a bad value."""
    environ = os.environ if environ is None else environ
    values = defaults()
    for s in SETTINGS:
        raw = environ.get(s.env, "")
        if raw:
            try:
                values[s.key] = s.type(raw)
            except ValueError as exc:
                raise ValueError(f"{s.env}={raw!r}: {exc}") from exc
    return values


def parse_args(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Flags of `python -m serving` (environment and defaults underneath); returns settings and the namespace."""
    base = from_environ()
    parser = argparse.ArgumentParser(prog="python -m serving", description="Market data serving (development server)")
    parser.add_argument("--host", default=os.environ.get("SERVING_HOST", mc.SERVING_HOST))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SERVING_PORT", mc.SERVING_PORT)))
    parser.add_argument("--log_level", default=os.environ.get("LOG_LEVEL", "INFO"))
    for s in SETTINGS:
        kind = _bool if s.type is _bool else s.type
        parser.add_argument(s.flag, dest=s.key, type=kind, default=base[s.key],
                            help=f"{s.help} (env {s.env}, default {s.default})")
    ns = parser.parse_args(argv)
    return {s.key: getattr(ns, s.key) for s in SETTINGS}, ns
