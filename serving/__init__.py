"""Serving: REST, WebSocket and dashboard over the pipeline's Kafka topics (DESIGN.md §7, §8).

Production: `gunicorn --worker-class gthread --workers 1 --threads 1100 --worker-connections 2200
--bind 0.0.0.0:8000 'serving:create_app()'`
(see docs/serving.md); development: `python -m serving`.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request
from flask.json.provider import JSONProvider

from market import codec
from market import settings as market_settings
from serving import errors, settings
from serving import state as serving_state
from serving import ws
from serving.api import bp as api_bp
from serving.metrics import method_label


class OrjsonProvider(JSONProvider):
    """Flask's JSON through the project's one codec (market.codec)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return codec.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return codec.loads(s)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the serving app: settings from the environment, overridden by `config`."""
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.json = OrjsonProvider(app)
    app.config.from_mapping(settings.from_environ())
    if config:
        app.config.from_mapping(config)
    if not logging.getLogger().handlers:
        # Under gunicorn nothing configures logging; the feed's warnings must still show.
        logging.basicConfig(level=market_settings.LOG_LEVEL.value().upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The consumer thread is CPU-bound under a busy feed; a request thread
    # waits up to the switch interval (5 ms by default) for the GIL at each of
    # its blocking calls. 1 ms keeps /api/v1 answers within their 50 ms budget at market scale.
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
    errors.init_app(app)
    ws.init_app(app)
    app.register_blueprint(api_bp)
    state = serving_state.init_app(app)
    _time_requests(app, state.metrics)
    return app


def _time_requests(app: Flask, metrics: Any) -> None:
    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        started = g.get("request_started")
        # The route template, not the URL, and known methods only keep the label set small.
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        if started is not None and endpoint != "/ws":
            metrics.request_latency.labels(method_label(request.method), endpoint,
                                           str(response.status_code)).observe(
                time.perf_counter() - started)
        return response
