"""REST routes of DESIGN.md §7 through the Flask test client."""
from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from market import config as mc
from serving import params
from serving.errors import ApiError
from tests.serving.conftest import KEEP_EVERYTHING, serving_of, sqlite_url
from tests.serving.samples import BASE_MS, MINUTE_MS, alert, bar


def feed(app: Flask, *records: dict) -> None:
    hub = serving_of(app).updates
    for record in records:
        if "alert_id" in record:
            hub.publish_alert(record)
        else:
            hub.publish_bar(record)


@pytest.fixture
def market(app: Flask) -> Flask:
    """AAPL with 3 windows (the last in two panes), MSFT with 1, a few alerts."""
    feed(app,
         bar("AAPL", 0, 100.0), bar("AAPL", 1, 101.0),
         bar("AAPL", 2, 102.0, pane_index=0), bar("AAPL", 2, 102.5, pane_index=1),
         bar("AAPL", 2, 999.0, pane_index=0),           # a stale pane arriving late: ignored
         bar("MSFT", 0, 400.0),
         alert("AAPL", 0, "volatility", detected_offset_ms=10_000),
         alert("AAPL", 1, "return_zscore", value=7.0),
         alert("MSFT", 0, "volume_spike", value=3.5, detected_offset_ms=50_000),
         alert("AAPL", 0, "volatility", detected_offset_ms=10_000))   # duplicate id
    return app


def test_symbols_sorted_with_latest_close(market: Flask, client: FlaskClient) -> None:
    body = client.get("/api/v1/symbols").get_json()
    assert [s["symbol"] for s in body["symbols"]] == ["AAPL", "MSFT"]
    aapl = body["symbols"][0]
    assert aapl["close"] == 102.5
    assert aapl["window_end"] == BASE_MS + 3 * MINUTE_MS
    assert set(aapl) == {"symbol", "close", "change_pct", "window_end"}


def test_trends_latest_is_latest_version_of_newest_window(market: Flask, client: FlaskClient) -> None:
    trends = client.get("/api/v1/trends/latest").get_json()["trends"]
    assert [(t["symbol"], t["window_start"], t["pane_index"]) for t in trends] == [
        ("AAPL", BASE_MS + 2 * MINUTE_MS, 1), ("MSFT", BASE_MS, 1)]


def test_trends_of_symbol_oldest_first_latest_versions(market: Flask, client: FlaskClient) -> None:
    body = client.get("/api/v1/trends/aapl").get_json()
    assert body["symbol"] == "AAPL"
    assert [t["close"] for t in body["trends"]] == [100.0, 101.0, 102.5]


@pytest.mark.parametrize("query, closes", [
    ("limit=2", [101.0, 102.5]),                                   # newest kept
    (f"from={BASE_MS + MINUTE_MS}", [101.0, 102.5]),
    (f"to={BASE_MS + MINUTE_MS}", [100.0, 101.0]),
    (f"from={BASE_MS}&to={BASE_MS}", [100.0]),
    ("from=2025-11-25T09:31:00Z", [101.0, 102.5]),
    ("from=2025-11-25T10:31:00%2B01:00&limit=1", [102.5]),
    ("to=2025-11-25T09:30:00", [100.0]),                            # no offset = UTC
    (f"limit={mc.REST_MAX_LIMIT}", [100.0, 101.0, 102.5]),
    ("limit=5000", [100.0, 101.0, 102.5]),
    ("from=2030-01-01T00:00:00Z", []),
    (f"from={BASE_MS + 1}&to={BASE_MS}", []),                      # an empty range is empty, not an error
    ("from=2025-11-25&to=2025-11-25T09:31", [100.0, 101.0]),       # a date is its midnight UTC
    ("from=2025-11-25T09:31:00.000000001%2B00:00", [101.0, 102.5]),   # ms resolution
])
def test_trends_filters(market: Flask, client: FlaskClient, query: str, closes: list[float]) -> None:
    response = client.get(f"/api/v1/trends/AAPL?{query}")
    assert response.status_code == 200, response.get_json()
    assert [t["close"] for t in response.get_json()["trends"]] == closes


def test_trends_default_limit_and_symbol_with_slash(app: Flask, client: FlaskClient) -> None:
    feed(app, *[bar("BTC/USD", m, 50_000.0 + m) for m in range(mc.REST_DEFAULT_LIMIT + 20)])
    trends = client.get("/api/v1/trends/btc/usd").get_json()["trends"]
    assert len(trends) == mc.REST_DEFAULT_LIMIT
    assert trends[-1]["close"] == 50_000.0 + mc.REST_DEFAULT_LIMIT + 19


def test_memory_holds_a_few_windows_the_store_all_bars_of_record(tmp_path: Path) -> None:
    from serving import create_app
    small = create_app({"TESTING": True, "CONSUME": False, "WINDOWS_IN_MEMORY": 2, **KEEP_EVERYTHING,
                        "DATABASE_URL": sqlite_url(tmp_path)})
    try:
        # 8 final windows, an EARLY one still open, and an older version of window 0 (ignored by the store).
        feed(small, *[bar("AAPL", m, 100.0 + m) for m in range(8)], bar("AAPL", 8, 108.0, pane_index=0),
             bar("AAPL", 0, 1.0, pane_index=0))
        trends = small.test_client().get("/api/v1/trends/AAPL").get_json()["trends"]
        assert [t["close"] for t in trends] == [100.0 + m for m in range(9)]
        assert trends[-1]["pane"] == "EARLY"
        assert serving_of(small).store.counts()["bars"] == 2
    finally:
        serving_of(small).close()


def test_alerts_newest_first_deduplicated(market: Flask, client: FlaskClient) -> None:
    alerts = client.get("/api/v1/alerts").get_json()["alerts"]
    assert [a["alert_id"] for a in alerts] == [
        f"AAPL:{BASE_MS + MINUTE_MS}:return_zscore", f"MSFT:{BASE_MS}:volume_spike", f"AAPL:{BASE_MS}:volatility"]


@pytest.mark.parametrize("query, ids", [
    ("symbol=msft", ["MSFT:volume_spike"]),
    ("type=volatility", ["AAPL:volatility"]),
    ("symbol=AAPL&type=return_zscore", ["AAPL:return_zscore"]),
    (f"from={BASE_MS + 45_000}", ["AAPL:return_zscore", "MSFT:volume_spike"]),
    ("limit=1", ["AAPL:return_zscore"]),
    ("symbol=ZZZZ", []),
])
def test_alert_filters(market: Flask, client: FlaskClient, query: str, ids: list[str]) -> None:
    response = client.get(f"/api/v1/alerts?{query}")
    assert response.status_code == 200
    got = [f"{a['symbol']}:{a['type']}" for a in response.get_json()["alerts"]]
    assert got == ids


@pytest.mark.parametrize("url, status, code", [
    ("/api/v1/trends/AAPL?limit=0", 400, "bad_limit"),
    ("/api/v1/trends/AAPL?limit=5001", 400, "bad_limit"),
    ("/api/v1/alerts?limit=1001", 400, "bad_limit"),
    ("/api/v1/trends/AAPL?interval=90s", 400, "bad_interval"),             # not a multiple of the 1m window
    ("/api/v1/trends/AAPL?interval=0m", 400, "bad_interval"),
    ("/api/v1/trends/AAPL?interval=5", 400, "bad_interval"),
    ("/api/v1/trends/AAPL?interval=1w", 400, "bad_interval"),
    ("/api/v1/trends/AAPL?interval=", 400, "bad_interval"),
    ("/api/v1/trends/AAPL?interval=%D9%A5m", 400, "bad_interval"),
    ("/api/v1/trends/AAPL?limit=ten", 400, "bad_limit"),
    ("/api/v1/trends/AAPL?from=yesterday", 400, "bad_from"),
    ("/api/v1/trends/AAPL?to=2025-13-45", 400, "bad_to"),
    ("/api/v1/trends/NOPE", 404, "unknown_symbol"),
    ("/api/v1/trends/BAD%20SYMBOL", 400, "bad_symbol"),
    ("/api/v1/alerts?type=crash", 400, "bad_type"),
    ("/api/v1/alerts?limit=-3", 400, "bad_limit"),
    ("/api/v1/alerts?from=soon", 400, "bad_from"),
    ("/api/v1/alerts?symbol=%24%24%24", 400, "bad_symbol"),
    # Issue 12: what the parsers used to let through to a 500 or to a wrong answer.
    ("/api/v1/trends/AAPL?from=%C2%B2", 400, "bad_from"),                 # "²" is a digit to str.isdigit
    ("/api/v1/alerts?from=%C2%B2", 400, "bad_from"),
    ("/api/v1/trends/AAPL?from=" + "9" * 5000, 400, "bad_from"),           # int() refuses 4,300+ digits
    ("/api/v1/trends/AAPL?to=-" + "1" * 16, 400, "bad_to"),
    ("/api/v1/trends/AAPL?from=2025-11-25T09:30:00%2B0100", 400, "bad_from"),   # offset needs its colon
    ("/api/v1/trends/AAPL?from=", 400, "bad_from"),                       # present but empty
    ("/api/v1/trends/AAPL?from=2025-02-30", 400, "bad_from"),             # no such day (it used to roll over)
    ("/api/v1/trends/AAPL?to=2025-04-31T10:00:00Z", 400, "bad_to"),
    ("/api/v1/trends/AAPL?limit=%D9%A5", 400, "bad_limit"),               # an Arabic-Indic 5
    ("/api/v1/trends/AAPL?limit=%2B5", 400, "bad_limit"),
    ("/api/v1/trends/AAPL?limit=" + "1" * 5000, 400, "bad_limit"),
    ("/api/v1/trends/AAPL%0A", 404, "not_found"),                         # the route itself stops at a newline
    ("/api/v1/alerts?symbol=AAPL%0A", 400, "bad_symbol"),
    ("/api/v1/alerts?symbol=", 400, "bad_symbol"),
    ("/api/v1/nothing", 404, "not_found"),
    ("/favicon.ico", 404, "not_found"),
])
def test_errors_are_json(market: Flask, client: FlaskClient, url: str, status: int, code: str) -> None:
    response = client.get(url)
    assert response.status_code == status
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]


def test_wrong_method_is_json_405(client: FlaskClient) -> None:
    response = client.post("/api/v1/symbols")
    assert response.status_code == 405 and response.is_json
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_metric_labels_stay_bounded(market: Flask, client: FlaskClient) -> None:
    """Made-up methods and URLs do not add label values to /metrics."""
    for n in range(20):
        client.open(f"/api/v1/trends/SYM{n}", method=f"FOO{n}")
        client.get(f"/no/such/page/{n}")
    text = client.get("/metrics").get_data(as_text=True)
    assert "FOO" not in text and "SYM" not in text and "/no/such" not in text
    assert 'method="other",status="405"' in text.replace('endpoint="unmatched",', "")
    assert 'endpoint="unmatched"' in text


def test_unhandled_exception_is_json_500(app: Flask) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    app.config["TESTING"] = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    assert "secret" not in response.get_data(as_text=True)


def test_not_ready_until_replayed(app: Flask, client: FlaskClient) -> None:
    serving_of(app).feed = types.SimpleNamespace(replayed=False, ready=False, status="replaying",
                                                 stop=lambda: None)
    for url in ("/api/v1/symbols", "/api/v1/trends/latest", "/api/v1/trends/AAPL", "/api/v1/alerts", "/readyz"):
        response = client.get(url)
        assert response.status_code == 503, url
        assert response.get_json()["error"]["code"] == "not_ready"
    assert client.get("/healthz").status_code == 200


def test_health_and_ready(market: Flask, client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["symbols"] == 2 and ready.get_json()["alerts"] == 3


def test_metrics_prometheus_text(market: Flask, client: FlaskClient) -> None:
    client.get("/api/v1/symbols")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for series in ("serving_messages_consumed_total", "serving_consumer_lag", "serving_websocket_clients",
                   "serving_request_duration_seconds_bucket", "serving_ready 1.0"):
        assert series in text
    assert 'endpoint="/api/v1/symbols"' in text


def test_openapi_matches_routes(app: Flask, client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = set(spec["paths"])
    routes = {rule.rule.replace("<path:symbol>", "{symbol}").replace("<symbol>", "{symbol}")
              for rule in app.url_map.iter_rules()
              if rule.endpoint not in ("static",) and rule.rule != "/ws"}
    assert documented == routes
    for path, ops in spec["paths"].items():
        assert set(ops) == {"get"}, path


def test_dashboard_page_and_assets(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/static/dashboard.js" in html and "http" not in html.replace("http-equiv", "")
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert client.get(asset).status_code == 200
    page.close()


@pytest.mark.parametrize("text, epoch_ms", [
    ("2024-02-29", 1709164800000),                   # a leap day
    ("2000-02-29T12:00Z", 951825600000),             # 2000 is a leap year (divisible by 400)
    ("1970-01-01", 0),
    ("2025-11-25T10:30:00+01:00", 1764063000000),
    ("2025-11-25T09:30:00.0019", 1764063000001),     # below a millisecond: cut
])
def test_time_parameters_read_real_days(text: str, epoch_ms: int) -> None:
    assert re.fullmatch(params.TIME_PATTERN, text)
    assert params.parse_time("from", text) == epoch_ms


@pytest.mark.parametrize("text", ["2100-02-29", "2023-02-29", "1900-01-01", "2025-06-31", "2025-11-25T24:00"])
def test_time_parameters_refuse_days_the_calendar_has_not(text: str) -> None:
    assert not re.fullmatch(params.TIME_PATTERN, text)   # /openapi.json says so too
    with pytest.raises(ApiError):
        params.parse_time("from", text)
