"""REST routes of DESIGN.md §7."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from market import config as mc
from serving import params
from serving.errors import ApiError
from serving.openapi import spec
from serving.state import state

bp = Blueprint("api", __name__)


def _require_ready() -> None:
    # Until history is replayed the state is partial: say so rather than serve it.
    if not state().replayed:
        raise ApiError(503, "not_ready", "serving is still replaying history from Kafka")


@bp.get("/api/v1/symbols")
def symbols() -> Response:
    """Every symbol with its last close, change and window end, sorted by symbol."""
    _require_ready()
    # Built from the kept encodings once per change, shared by concurrent requests (serving/latest.py).
    return Response(state().store.board.symbols_json(), mimetype="application/json")


@bp.get("/api/v1/trends/latest")
def trends_latest() -> Response:
    """The latest bar of every symbol."""
    _require_ready()
    return Response(state().store.board.trends_json(), mimetype="application/json")


@bp.get("/api/v1/trends/<path:symbol>")
def trends(symbol: str) -> Response:
    """Bars of one symbol, oldest first, the newest `limit` starting within [from, to] (from after to: none),
    at the pipeline's window or rolled up to `interval` from the bars of record."""
    symbol = params.parse_symbol(symbol)
    start = params.parse_time("from", request.args.get("from"))
    end = params.parse_time("to", request.args.get("to"))
    limit = params.parse_limit(request.args.get("limit"), mc.REST_DEFAULT_LIMIT, params.TRENDS_MAX_LIMIT)
    s = state()
    interval, interval_ms = params.parse_interval(request.args.get("interval"), s.window_ms)
    _require_ready()
    store = s.store
    if not store.has_symbol(symbol):
        raise ApiError(404, "unknown_symbol", f"no bars for symbol {symbol}")
    if interval_ms == s.window_ms:
        bars = store.bars(symbol, start, end, limit)
    else:
        bars = store.rollups(symbol, interval_ms, start, end, limit)
    return jsonify({"symbol": symbol, "interval": interval, "trends": bars})


@bp.get("/api/v1/alerts")
def alerts() -> Response:
    """Recent alerts newest first, filtered by symbol, type and detected_at >= from."""
    symbol_arg = request.args.get("symbol")
    symbol = params.parse_symbol(symbol_arg) if symbol_arg is not None else None
    alert_type = params.parse_alert_type(request.args.get("type"))
    since = params.parse_time("from", request.args.get("from"))
    limit = params.parse_limit(request.args.get("limit"), mc.REST_DEFAULT_LIMIT, mc.REST_MAX_LIMIT)
    _require_ready()
    return jsonify({"alerts": state().store.alerts(symbol, alert_type, since, limit)})


@bp.get("/api/v1/dead-letters")
def dead_letters() -> Response:
    """Rejected ticks newest first (by rejected_at), filtered by reason, symbol and from <= rejected_at <= to."""
    reason = params.parse_reason(request.args.get("reason"))
    symbol_arg = request.args.get("symbol")
    symbol = params.parse_symbol(symbol_arg) if symbol_arg is not None else None
    start = params.parse_time("from", request.args.get("from"))
    end = params.parse_time("to", request.args.get("to"))
    limit = params.parse_limit(request.args.get("limit"), mc.REST_DEFAULT_LIMIT, params.DEAD_LETTERS_MAX_LIMIT)
    _require_ready()
    return jsonify({"dead_letters": state().db.dead_letters(reason, symbol, start, end, limit)})


@bp.get("/api/v1/dead-letters/summary")
def dead_letter_summary() -> Response:
    """Rejected ticks with rejected_at >= from: the total, by reason, and the 50 symbols with the most
    (up to 3 s old: a count over a flood is costly, so concurrent askers share one)."""
    start = params.parse_time("from", request.args.get("from"))
    _require_ready()
    return jsonify(state().store.dead_letter_summary(start))


@bp.get("/api/v1/latency")
def latency() -> Response:
    """p50 and p99 of each hop of the live bars' latency over the last minute (from /metrics' histogram)."""
    return jsonify(state().latency.current())


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """200 once history is replayed and the broker answers, else 503 with the reason."""
    s = state()
    body: dict[str, Any] = {"status": "ready" if s.ready else "not_ready", "detail": s.status,
                            **s.store.counts(), "websocket_clients": s.hub.client_count()}
    if not s.ready:
        body["error"] = {"code": "not_ready", "message": s.status}
    response = jsonify(body)
    response.status_code = 200 if s.ready else 503
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(state().metrics.registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of this API."""
    return jsonify(spec(current_app.config))


@bp.get("/")
def dashboard() -> Response:
    """The live dashboard page."""
    return current_app.send_static_file("index.html")
