"""The OpenAPI 3 description of the REST API (served at /openapi.json)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from market import config as mc
from market import schema
from market.schema import (
    ALERT_FIELD_KINDS,
    ALERT_FIELDS,
    ALERT_TYPES,
    BAR_FIELD_KINDS,
    BAR_FIELDS,
    DEAD_LETTER_FIELDS,
    MAX_EVENT_MS,
    MIN_EVENT_MS,
    PANES,
    SEVERITIES,
    SYMBOL_PATTERN,
    TRENDS,
)
from serving import params
from serving.database import PANE_ROLLUP, TOP_SYMBOLS
from serving.metrics import HOPS

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_SYMBOL = {"type": "string", "pattern": f"^{SYMBOL_PATTERN.pattern}$", "minLength": 1, "maxLength": 16}

# The JSON schema of each field kind of market/schema.py (what serving/records.py checks on the way in).
KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    schema.SYMBOL: _SYMBOL,
    schema.EPOCH_MS: {"type": "integer", "minimum": MIN_EVENT_MS, "maximum": MAX_EVENT_MS},
    schema.EPOCH_MS_OR_NULL: {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_EVENT_MS},
    schema.NUMBER: _NUM,
    schema.NUMBER_OR_NULL: {"type": ["number", "null"]},
    schema.NON_NEGATIVE: {"type": "number", "minimum": 0},
    schema.COUNT: {"type": "integer", "minimum": 0},
    schema.PANE_INDEX: {"type": "integer", "minimum": 0},
    schema.BOOLEAN: {"type": "boolean"},
    schema.PANE: {"type": "string", "enum": list(PANES)},
    schema.TREND: {"type": "string", "enum": list(TRENDS)},
    schema.ANOMALIES: {"type": "array", "items": {"type": "string", "enum": list(ALERT_TYPES)}},
    schema.TEXT: {"type": "string", "minLength": 1},
    schema.ALERT_TYPE: {"type": "string", "enum": list(ALERT_TYPES)},
    schema.SEVERITY: {"type": "string", "enum": list(SEVERITIES)},
}


def _bar_schema() -> dict[str, Any]:
    props: dict[str, Any] = {name: KIND_SCHEMAS[kind] for name, kind in BAR_FIELD_KINDS.items()}
    # What REST adds to a bar of record: ROLLUP, a bar of a longer interval
    # (?interval=), rolled up from the bars of record, with no cross-window
    # fields, so no trend; last_tick_ms and emitted_at are null on bars of a
    # pipeline older than these fields.
    props["pane"] = {"type": "string", "enum": [*PANES, PANE_ROLLUP]}
    props["trend"] = {"type": ["string", "null"], "enum": [*TRENDS, None]}
    # serving stores only complete bars (serving/records.py), so every field is there.
    return {"type": "object", "properties": props, "required": list(BAR_FIELDS)}


def _alert_schema() -> dict[str, Any]:
    props = {name: KIND_SCHEMAS[kind] for name, kind in ALERT_FIELD_KINDS.items()}
    return {"type": "object", "properties": props, "required": list(ALERT_FIELDS)}


def _dead_letter_schema() -> dict[str, Any]:
    nullable_int = {"type": ["integer", "null"], "minimum": 0}
    return {"type": "object", "required": [*DEAD_LETTER_FIELDS, "key", "symbol"], "properties": {
        "reason": {"type": "string", "pattern": f"^{params.REASON_PATTERN}$"},
        "detail": {"type": "string"},
        "raw": {"type": "string", "description": "the rejected record's original value as text"},
        "source": {"type": "object", "required": ["topic", "partition", "offset"], "properties": {
            "topic": {"type": ["string", "null"]}, "partition": nullable_int, "offset": nullable_int}},
        "rejected_at": _INT,
        "key": {"type": ["string", "null"], "description": "the rejected record's original Kafka key as text"},
        "symbol": {"type": ["string", "null"], "description": "the key if it is a symbol, else the raw text's "
                                                              "symbol when it parses, upper case; else null"}}}


def _time_param(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False,
            "description": f"{what}: epoch ms, or an ISO-8601 date or date-time of a real calendar day "
                           "(no offset = UTC)",
            "schema": {"type": "string", "pattern": f"^(?:{params.TIME_PATTERN})$",
                       "maxLength": params.TIME_MAX_LENGTH}}


_LIMIT = {"name": "limit", "in": "query", "required": False,
          "schema": {"type": "integer", "minimum": 1, "maximum": mc.REST_MAX_LIMIT,
                     "default": mc.REST_DEFAULT_LIMIT}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "bad parameter", 404: "unknown symbol", 503: "not ready (replaying history)"}
    return {str(c): _json("Error", words[c]) for c in codes}


def spec(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI document; paths match the app's routes (a test checks both ways)."""
    window_ms = int((config or {}).get("WINDOW_SIZE_S", mc.WINDOW_SIZE_S)) * 1000
    return {
        "openapi": "3.1.0",
        "info": {"title": "Market data serving", "version": "1.0.0",
                 "description": "1-minute bars, anomaly alerts and rejected ticks from the pipeline's Kafka topics. "
                                "Live pushes: WebSocket /ws (see docs/serving.md)."},
        "paths": {
            "/api/v1/symbols": {"get": {"summary": "Every symbol with its last close",
                                        "responses": {"200": _json("Symbols", "symbols sorted by symbol"),
                                                      **_errors(503)}}},
            "/api/v1/trends/latest": {"get": {"summary": "The latest bar of every symbol",
                                              "responses": {"200": _json("Trends", "latest bars"), **_errors(503)}}},
            "/api/v1/trends/{symbol}": {"get": {
                "summary": "Bars of one symbol, oldest first (latest version of each window)",
                "parameters": [{"name": "symbol", "in": "path", "required": True, "schema": _SYMBOL,
                                "description": "case-insensitive; may contain /"},
                               _time_param("from", "earliest window_start"),
                               _time_param("to", "latest window_start"),
                               {**_LIMIT, "schema": {**_LIMIT["schema"], "maximum": params.TRENDS_MAX_LIMIT}},
                               {"name": "interval", "in": "query", "required": False,
                                "description": "bar length: the pipeline's window (default, e.g. 1m) or a multiple "
                                               "of it, <n>s|m|h|d; longer bars are rolled up from the bars of record",
                                "schema": {"type": "string",
                                           "pattern": f"^(?:{params.interval_pattern(window_ms)})$"}}],
                "responses": {"200": _json("SymbolTrends", "bars; the newest `limit` are kept"),
                              **_errors(400, 404, 503)}}},
            "/api/v1/alerts": {"get": {
                "summary": "Recent alerts, newest first",
                "parameters": [{"name": "symbol", "in": "query", "required": False, "schema": _SYMBOL},
                               {"name": "type", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": list(ALERT_TYPES)}},
                               _time_param("from", "earliest detected_at"), _LIMIT],
                "responses": {"200": _json("Alerts", "alerts"), **_errors(400, 503)}}},
            "/api/v1/dead-letters": {"get": {
                "summary": "Rejected ticks (the dead-letter topic), newest first",
                "parameters": [{"name": "reason", "in": "query", "required": False,
                                "schema": {"type": "string", "pattern": f"^{params.REASON_PATTERN}$"}},
                               {"name": "symbol", "in": "query", "required": False, "schema": _SYMBOL},
                               _time_param("from", "earliest rejected_at"), _time_param("to", "latest rejected_at"),
                               {**_LIMIT, "schema": {**_LIMIT["schema"], "maximum": params.DEAD_LETTERS_MAX_LIMIT}}],
                "responses": {"200": _json("DeadLetters", "dead letters, each with its original key"),
                              **_errors(400, 503)}}},
            "/api/v1/dead-letters/summary": {"get": {
                "summary": "Rejected ticks since `from`: total, by reason, the symbols with the most",
                "parameters": [_time_param("from", "earliest rejected_at")],
                "responses": {"200": _json("DeadLetterSummary", "counts"), **_errors(400, 503)}}},
            "/api/v1/latency": {"get": {
                "summary": "p50/p99 of each latency hop of the live bars over about the last minute",
                "responses": {"200": _json("Latency", "per hop: observations and quantiles in ms "
                                                      "(null when none)")}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json("Health", "alive")}}},
            "/readyz": {"get": {"summary": "Readiness: history replayed and broker reachable",
                                "responses": {"200": _json("Readiness", "ready"),
                                              "503": _json("Readiness", "replaying or broker unreachable")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text exposition format",
                                                       "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3 JSON", "content": {
                                          "application/json": {"schema": {"type": "object"}}}}}}},
            "/": {"get": {"summary": "The live dashboard",
                          "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
        },
        "components": {"schemas": {
            "Bar": _bar_schema(),
            "Alert": _alert_schema(),
            "Symbols": {"type": "object", "required": ["symbols"], "properties": {"symbols": {
                "type": "array", "items": {
                    "type": "object", "required": ["symbol", "close", "change_pct", "window_end"],
                    "properties": {"symbol": {"type": "string"}, "close": _NUM, "change_pct": _NUM,
                                   "window_end": _INT}}}}},
            "Trends": {"type": "object", "required": ["trends"], "properties": {
                "trends": {"type": "array", "items": {"$ref": "#/components/schemas/Bar"}}}},
            "SymbolTrends": {"type": "object", "required": ["symbol", "interval", "trends"], "properties": {
                "symbol": {"type": "string"}, "interval": {"type": "string"},
                "trends": {"type": "array", "items": {"$ref": "#/components/schemas/Bar"}}}},
            "Alerts": {"type": "object", "required": ["alerts"], "properties": {
                "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}}},
            "DeadLetter": _dead_letter_schema(),
            "DeadLetters": {"type": "object", "required": ["dead_letters"], "properties": {
                "dead_letters": {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetter"}}}},
            "DeadLetterSummary": {"type": "object", "required": ["total", "by_reason", "by_symbol"], "properties": {
                "total": {"type": "integer", "minimum": 0},
                "by_reason": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
                "by_symbol": {"type": "array", "maxItems": TOP_SYMBOLS, "items": {
                    "type": "object", "required": ["symbol", "n"],
                    "properties": {"symbol": {"type": "string"}, "n": {"type": "integer", "minimum": 1}}}}}},
            "Latency": {"type": "object", "required": ["window_s", "hops"], "properties": {
                "window_s": {"type": "number", "minimum": 0},
                "hops": {"type": "object", "required": list(HOPS), "properties": {hop: {
                    "type": "object", "required": ["count", "p50_ms", "p99_ms"],
                    "properties": {"count": {"type": "integer", "minimum": 0},
                                   "p50_ms": {"type": ["number", "null"]},
                                   "p99_ms": {"type": ["number", "null"]}}} for hop in HOPS}}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            "Health": {"type": "object", "required": ["status"],
                       "properties": {"status": {"type": "string", "enum": ["ok"]}}},
            "Readiness": {"type": "object", "required": ["status", "detail", "symbols", "bars", "alerts",
                                                         "websocket_clients"],
                          "properties": {"status": {"type": "string", "enum": ["ready", "not_ready"]},
                                         "detail": {"type": "string"}, "symbols": _INT, "bars": _INT,
                                         "alerts": _INT, "websocket_clients": _INT,
                                         "error": {"$ref": "#/components/schemas/Error/properties/error"}}},
        }},
    }
