"""/openapi.json describes what the API really accepts and answers: the document is valid
OpenAPI, every documented response validates against it, and Schemathesis finds nothing."""
from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from openapi_spec_validator import validate

from tests.serving.conftest import LiveServer, serving_of
from tests.serving.samples import BASE_MS, alert, bar, dead_letter, dead_letter_rows


def fill(app: Flask) -> None:
    hub = serving_of(app).updates
    for symbol in ("AAPL", "MSFT", "BTC/USD", "ES=F", "^GSPC"):
        for minute in range(3):
            hub.publish_bar(bar(symbol, minute, 100.0 + minute, pane_index=minute % 2))
    hub.publish_alert(alert("AAPL", 0))
    hub.publish_alert(alert("MSFT", 1, "volume_spike", value=7.0))
    hub.publish_dead_letters(dead_letter_rows([
        (b"AAPL", dead_letter()),
        (b"", dead_letter("invalid_json", "\\xff not json", "not JSON", source_offset=None)),
        (None, dead_letter("late", '{"symbol": "msft", "price": 1, "volume": 1, "timestamp": 1}', "too late",
                           rejected_at=BASE_MS + 5000)),
        (b"X\n", dead_letter("reason_of_a_later_pipeline", "", "a tombstone"))]))


# One request per documented (path, status): the test fails when a documented response has none.
READY_CASES = {
    ("/api/v1/symbols", "200"): "/api/v1/symbols",
    ("/api/v1/trends/latest", "200"): "/api/v1/trends/latest",
    ("/api/v1/trends/{symbol}", "200"): f"/api/v1/trends/btc/usd?from={BASE_MS}&to=2025-11-25T09:32Z&limit=2",
    ("/api/v1/trends/{symbol}", "400"): "/api/v1/trends/AAPL?from=%C2%B2",
    ("/api/v1/trends/{symbol}", "404"): "/api/v1/trends/NOPE",
    ("/api/v1/alerts", "200"): "/api/v1/alerts?symbol=msft&type=volume_spike&from=2025-11-25&limit=5",
    ("/api/v1/alerts", "400"): "/api/v1/alerts?limit=0",
    ("/api/v1/dead-letters", "200"): "/api/v1/dead-letters?reason=late&symbol=msft&from=2025-11-25&to=2099-01-01&limit=5",
    ("/api/v1/dead-letters", "400"): "/api/v1/dead-letters?reason=Late",
    ("/api/v1/dead-letters/summary", "200"): "/api/v1/dead-letters/summary?from=2025-11-25",
    ("/api/v1/dead-letters/summary", "400"): "/api/v1/dead-letters/summary?from=soon",
    ("/api/v1/latency", "200"): "/api/v1/latency",
    ("/healthz", "200"): "/healthz",
    ("/readyz", "200"): "/readyz",
    ("/metrics", "200"): "/metrics",
    ("/openapi.json", "200"): "/openapi.json",
    ("/", "200"): "/",
}
NOT_READY_CASES = {
    ("/api/v1/symbols", "503"): "/api/v1/symbols",
    ("/api/v1/trends/latest", "503"): "/api/v1/trends/latest",
    ("/api/v1/trends/{symbol}", "503"): "/api/v1/trends/AAPL",
    ("/api/v1/alerts", "503"): "/api/v1/alerts",
    ("/api/v1/dead-letters", "503"): "/api/v1/dead-letters",
    ("/api/v1/dead-letters/summary", "503"): "/api/v1/dead-letters/summary",
    ("/readyz", "503"): "/readyz",
}


def test_document_is_valid_openapi(client: Any) -> None:
    validate(client.get("/openapi.json").get_json())


def test_every_documented_response_validates_against_the_document(app: Flask) -> None:
    fill(app)
    client = app.test_client()
    spec = client.get("/openapi.json").get_json()
    documented = {(path, status) for path, ops in spec["paths"].items() for status in ops["get"]["responses"]}
    assert documented == set(READY_CASES) | set(NOT_READY_CASES)

    def check(cases: dict[tuple[str, str], str]) -> None:
        for (path, status), url in cases.items():
            response = client.get(url)
            assert str(response.status_code) == status, url
            documented_response = spec["paths"][path]["get"]["responses"][status]
            content = documented_response.get("content", {})
            assert content, f"{path} {status} documents no content type"
            media = response.mimetype
            assert media in content, f"{url}: {media} not in {list(content)}"
            schema = content[media].get("schema")
            if schema is not None:
                # The whole document as the root, so "#/components/..." references resolve.
                root = {**schema, "components": spec["components"]}
                jsonschema.Draft202012Validator(root).validate(response.get_json())

    check(READY_CASES)
    serving_of(app).feed = types.SimpleNamespace(replayed=False, ready=False, status="replaying",
                                                 stop=lambda: None)
    check(NOT_READY_CASES)


def test_schemathesis_finds_no_server_error_and_no_rejected_valid_request(
        live_server: Callable[..., LiveServer], tmp_path: Path) -> None:
    """Every check of Schemathesis 4 (positive and negative data, all phases that apply)."""
    server = live_server()
    fill(server.app)
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", "all",
         "--mode", "all", "--max-examples", "150", "--seed", "20261125", "--no-color", "--workers", "1",
         "--request-timeout", "10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout, report
