"""Fixtures for serving: an app without Kafka (its store a SQLite file of its own), its test client,
and a live threaded server."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import WSGIRequestHandler, make_server

from serving import create_app
from serving.state import EXTENSION, ServingState


def serving_of(app: Flask) -> ServingState:
    """The serving state (store, hub, feed) of `app`."""
    return app.extensions[EXTENSION]


# The samples' bars are of 2025: a test app keeps them (retention runs 5 s after start).
KEEP_EVERYTHING = {"HISTORY_DAYS": 365_000.0}


def sqlite_url(folder: Path) -> str:
    """A DATABASE_URL for a new SQLite file in `folder`."""
    return f"sqlite:///{folder / 'market.db'}"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """An app whose store the test fills directly (no Kafka consumer), on a SQLite file of its own."""
    app = create_app({"TESTING": True, "CONSUME": False, "DATABASE_URL": sqlite_url(tmp_path), **KEEP_EVERYTHING})
    yield app
    serving_of(app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class QuietHandler(WSGIRequestHandler):
    """No access log: tests assert on responses, not on log lines."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class LiveServer:
    """A threaded Werkzeug server running an app on a free loopback port."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def state(self) -> ServingState:
        return serving_of(self.app)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the app's Prometheus registry, as /metrics shows it (0 before it is first counted)."""
        value = self.state.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        serving_of(self.app).close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Factory: start a live server for `create_app(config)` (a new SQLite file each unless config names
    DATABASE_URL); all are stopped after the test."""
    started: list[LiveServer] = []

    def start(config: dict[str, Any] | None = None) -> LiveServer:
        folder = tmp_path / f"server{len(started)}"
        folder.mkdir()
        server = LiveServer(create_app({"TESTING": True, "CONSUME": False, "DATABASE_URL": sqlite_url(folder),
                                        **KEEP_EVERYTHING, **(config or {})}))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium driven over the DevTools protocol (tests/serving/cdp.py); closed after the test."""
    from tests.conftest import missing_prerequisite
    from tests.serving.cdp import Browser, chromium_path

    if chromium_path() is None:
        missing_prerequisite("chromium is not installed: run scripts/browser.sh as root")
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL started for this test session (tests/serving/postgres.py)."""
    from tests.conftest import missing_prerequisite
    from tests.serving.postgres import PostgresServer, postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        missing_prerequisite("PostgreSQL is not installed: apt-get install postgresql (initdb, pg_ctl)")
    server = PostgresServer(bindir)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return request.getfixturevalue("postgres_server").new_database()
