"""Serving's settings (market/settings.py): environment for `create_app()`, flags on top for `python -m serving`.

Each setting's Flask config key is its environment variable's name
(`OUTPUT_TOPIC`, `WS_MAX_CONNECTIONS`, `KAFKA_BOOTSTRAP_SERVERS`, ...).
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from market import config as mc
from market import kafka_security
from market import settings as ms
from market.settings import Setting

SETTINGS: tuple[Setting, ...] = (
    ms.BOOTSTRAP_SERVERS,
    ms.OUTPUT_TOPIC,
    ms.ALERTS_TOPIC,
    ms.DLQ_TOPIC,
    Setting("history_hours", mc.SERVING_HISTORY_HOURS, "hours of the topics replayed on start (by record timestamp)",
            type=float),
    Setting("database_url", "", "the store of bars of record, alerts and dead letters: sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB (empty: SQLite in .cache/data/serving/market.db)"),
    Setting("history_days", 30.0, "days of bars, alerts and dead letters the store keeps (older ones are deleted "
            "in the background)", type=float),
    # The pipeline's own declaration (pipelines/options.py), word for word: one name, one meaning.
    # Serving's intervals are multiples of it.
    Setting("window_size_s", mc.WINDOW_SIZE_S, "bar length in seconds, windows aligned to the epoch", type=int),
    Setting("windows_in_memory", 3, "windows of each symbol kept in memory (open windows live only there; "
            "the bars of record are in the store)", type=int),
    Setting("alerts_kept", mc.SERVING_ALERTS_KEPT, "most recent alerts kept in memory", type=int),
    Setting("ws_queue_bytes", mc.WS_QUEUE_BYTES,
            "bytes a WebSocket client may have waiting before it is closed with 1008", type=int),
    Setting("ws_max_connections", mc.WS_MAX_CONNECTIONS,
            "WebSocket connections at once; one more is closed with 1013 (try again later)", type=int),
    Setting("ws_max_symbols", mc.WS_MAX_SYMBOLS,
            "symbols one WebSocket client may name per channel (\"*\" counts as none)", type=int),
    Setting("ws_message_rate", mc.WS_MESSAGE_RATE,
            "client messages per second one WebSocket may send on average (more: closed with 1008)", type=float),
    Setting("ws_message_burst", mc.WS_MESSAGE_BURST, "client messages one WebSocket may send at once", type=int),
    Setting("ws_allowed_origins", mc.WS_ALLOWED_ORIGINS,
            "comma-separated Origins a browser may open /ws from: 'self' (the Host the request names), "
            "'localhost' (any port on localhost, 127.0.0.1, [::1]), exact origins like "
            "https://dash.example.com, or '*'"),
    Setting("ws_replay_max_concurrent", mc.WS_REPLAY_MAX_CONCURRENT,
            "resuming subscribes (\"after\"/\"since\") replaying from Kafka at once, each a consumer and a thread; "
            "one more gets an error and a snapshot (0: resume off)", type=int),
    Setting("ws_replay_max_messages", mc.WS_REPLAY_MAX_MESSAGES,
            "messages one replay may send; past them it stops with an error and a snapshot", type=int),
    Setting("ws_replay_buffer_bytes", mc.WS_REPLAY_BUFFER_BYTES,
            "bytes of live messages a replaying client may have waiting for its replay to end before it is "
            "closed with 1008", type=int),
    Setting("ws_heartbeat_s", mc.WS_HEARTBEAT_S, "seconds between heartbeat messages", type=float),
    Setting("ws_ping_interval_s", mc.WS_PING_INTERVAL_S,
            "seconds between WebSocket protocol pings (a client missing a pong is closed)", type=float),
    Setting("ws_max_message_bytes", mc.WS_MAX_MESSAGE_BYTES, "largest client message accepted", type=int),
    Setting("ws_send_buffer_bytes", mc.WS_SEND_BUFFER_BYTES,
            "kernel send buffer per WebSocket (0 = system default)", type=int),
    Setting("ws_close_grace_s", mc.WS_CLOSE_GRACE_S, "seconds an evicted client (overflow, rate limit) gets to "
            "take its close frame before the socket is cut", type=float),
    Setting("consume", True, "run the Kafka consumer (off only for tests that feed the store directly)",
            type=ms.boolean),
    # DESIGN.md §10 (market/kafka_security.py checks and maps them).
    *kafka_security.SETTINGS,
)

# `python -m serving` only: gunicorn binds and logs by its own flags. Where
# to listen is a flag alone: tcsh exports HOST (the machine's name), and a
# development server must not open itself on the network because of it.
SERVER: tuple[Setting, ...] = (
    Setting("host", mc.SERVING_HOST, "address the development server listens on", flag_only=True),
    Setting("port", mc.SERVING_PORT, "port the development server listens on", type=int, flag_only=True),
    ms.LOG_LEVEL,
)


def defaults() -> dict[str, Any]:
    """Every setting at its built-in default, by Flask key."""
    return {s.key: s.default for s in SETTINGS}


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings by Flask key from the environment, defaults for the rest; SettingError names a bad variable."""
    values = ms.from_environ(SETTINGS, environ)
    return {s.key: values[s.name] for s in SETTINGS}


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m serving`; each defaults to its environment variable, then market/config.py."""
    parser = argparse.ArgumentParser(
        prog="python -m serving", description="Market data serving (development server)",
        epilog="Every flag also reads the environment variable shown with it; a flag given wins. "
               "gunicorn ('serving:create_app()') reads the environment alone.")
    ms.add_arguments(parser, SERVER)
    ms.add_arguments(parser, SETTINGS)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Flags of `python -m serving` over environment and defaults: (settings by Flask key, namespace).

    A bad value, given or from the environment, is a usage error (exit status 2).
    """
    parser = build_parser()
    ns = parser.parse_args(argv)
    values = ms.values(ns, SETTINGS)
    try:
        kafka_security.from_mapping(values)
    except kafka_security.KafkaSecurityError as exc:
        parser.error(str(exc))
    return {s.key: values[s.name] for s in SETTINGS}, ns
