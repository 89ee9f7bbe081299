"""The dashboard in headless Debian Chromium: table, sparklines, chart, alerts, live updates."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.transport import cut_socket
from tests.serving.cdp import Browser
from tests.serving.conftest import LiveServer
from tests.serving.samples import alert, bar, dead_letter, dead_letter_rows

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SYMBOLS = {"AAPL": 190.0, "MSFT": 410.0, "NVDA": 120.0, "TSLA": 250.0}
MINUTES = 40


def test_dashboard_fills_and_updates_live(browser: Browser, live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    hub = server.state.hub
    for symbol, price in SYMBOLS.items():
        for minute in range(MINUTES):
            # A gentle zig-zag so candles go both ways.
            close = price * (1 + 0.002 * minute + (0.004 if minute % 3 == 0 else -0.002))
            server.state.updates.publish_bar(bar(symbol, minute, round(close, 2), trend="up" if minute % 2 else "down"))
    server.state.updates.publish_alert(alert("NVDA", MINUTES - 1, "volatility", value=4.4,
                            message="NVDA swung 4.40% within the 1-minute bar"))

    browser.navigate(server.url + "/")
    browser.wait_for("document.body.dataset.connection === 'live'")
    browser.wait_for(f"document.querySelectorAll('#symbols tr[data-symbol]').length === {len(SYMBOLS)}")
    # History comes over REST after the snapshot: every sparkline and the chart fill up.
    browser.wait_for(f"[...document.querySelectorAll('#symbols canvas.spark')]"
                     f".every(c => Number(c.dataset.points) === {MINUTES})")
    browser.wait_for(f"Number(document.querySelector('#chart').dataset.bars) === {MINUTES}")

    rows = browser.evaluate("[...document.querySelectorAll('#symbols tr[data-symbol]')]"
                            ".map(r => [r.dataset.symbol, r.querySelector('.last').textContent])")
    latest = {b["symbol"]: b["close"] for b in server.state.store.latest()}
    assert rows == [[s, f"{latest[s]:.2f}"] for s in sorted(SYMBOLS)]
    assert browser.evaluate("document.querySelector('#chart').dataset.symbol") == "AAPL"
    # The canvas really has ink on it (not just a data attribute).
    inked = browser.evaluate("""(() => { const c = document.querySelector('#chart');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })()""")
    assert inked > 5000
    assert "NVDA swung 4.40%" in browser.wait_for("document.querySelector('#alerts li.critical')?.textContent")

    # Live: a new bar and a new alert over the WebSocket, no reload.
    server.state.updates.publish_bar(bar("MSFT", MINUTES, 433.21))
    server.state.updates.publish_alert(alert("TSLA", MINUTES, "volume_spike", value=3.3, message="TSLA volume 3.3x normal"))
    browser.wait_for("document.querySelector('#symbols tr[data-symbol=\"MSFT\"] .last').textContent === '433.21'",
                     timeout=5)
    browser.wait_for("document.querySelector('#alerts li')?.textContent.includes('TSLA volume 3.3x')", timeout=5)
    browser.evaluate("document.querySelector('#symbols tr[data-symbol=\"MSFT\"]').click()")
    assert browser.wait_for("document.querySelector('#chart').dataset.symbol") == "MSFT"
    assert browser.evaluate("Number(document.querySelector('#chart').dataset.bars)") == MINUTES + 1
    # The interval picker: 5-minute bars rolled up by the server (41 minutes from 09:30: 9 intervals).
    browser.evaluate("document.querySelector('#intervals button[data-interval=\"5m\"]').click()")
    browser.wait_for("document.querySelector('#chart').dataset.interval === '5m' && "
                     "Number(document.querySelector('#chart').dataset.bars) === 9", timeout=5)
    assert "5m bars" in browser.evaluate("document.querySelector('#chart-caption').textContent")
    browser.evaluate("document.querySelector('#intervals button[data-interval=\"1m\"]').click()")
    browser.wait_for(f"Number(document.querySelector('#chart').dataset.bars) === {MINUTES + 1}", timeout=5)
    # A dropped connection: the page says so, reconnects by itself and resumes.
    for client in list(hub._clients.values()):
        cut_socket(client.mailbox.sock)()
    browser.wait_for("document.body.dataset.connection === 'down'", timeout=5)
    browser.wait_for("document.body.dataset.connection === 'live'", timeout=10)
    browser.wait_for(f"document.querySelectorAll('#symbols tr[data-symbol]').length === {len(SYMBOLS)}")
    server.state.updates.publish_bar(bar("TSLA", MINUTES, 277.77))
    browser.wait_for("document.querySelector('#symbols tr[data-symbol=\"TSLA\"] .last').textContent === '277.77'",
                     timeout=5)
    shot = browser.screenshot(ARTIFACTS / "dashboard.png")
    assert shot.stat().st_size > 10_000
    assert not [line for line in browser.console if "exception" in line]


def test_rejected_ticks_and_latency_panels(browser: Browser, live_server: Callable[..., LiveServer]) -> None:
    """The last hour's dead letters by reason and the newest with their detail, live; p50/p99 per hop."""
    server = live_server()
    updates = server.state.updates
    now = int(time.time() * 1000)
    hostile = '<img src=x onerror="document.body.dataset.pwned=1">'
    updates.publish_dead_letters(dead_letter_rows([
        (b"OLD", dead_letter("late", rejected_at=now - 2 * 3600 * 1000)),      # older than the hour: not counted
        (b"AAPL", dead_letter("invalid_price", rejected_at=now - 60_000)),
        (b"", dead_letter("invalid_json", hostile, "not JSON: unexpected character", rejected_at=now - 30_000)),
        (b"MSFT", dead_letter("invalid_price", '{"symbol": "MSFT", "price": 0}', "price must be > 0, got 0",
                              rejected_at=now - 10_000)),
    ]))
    for seconds in (0.4, 0.6, 0.8, 0.9, 1.2):
        server.state.metrics.latency_event_to_emit.observe(seconds)

    browser.navigate(server.url + "/")
    browser.wait_for("document.querySelector('#rejects-panel').dataset.total === '3'")
    reasons = browser.evaluate("[...document.querySelectorAll('#reject-reasons li')]"
                               ".map(li => [li.dataset.reason, Number(li.dataset.n)])")
    assert reasons == [["invalid_price", 2], ["invalid_json", 1]]
    newest = browser.evaluate("[...document.querySelectorAll('#rejects li')].map(li => li.textContent)")
    assert len(newest) == 3
    assert "price must be > 0, got 0" in newest[0] and "MSFT" in newest[0]
    assert hostile in newest[1]        # shown as text, never run as HTML
    assert browser.evaluate("document.body.dataset.pwned === undefined && !document.querySelector('#rejects img')")

    # Live: a new rejected tick shows within a poll, no reload.
    updates.publish_dead_letters(dead_letter_rows([(b"TSLA", dead_letter("duplicate", detail="exact copy of seq 7",
                                                                         rejected_at=int(time.time() * 1000)))],
                                                  first_offset=10))
    # Within a poll (2 s) of the server's shared summary (at most 3 s old).
    browser.wait_for("document.querySelector('#rejects-panel').dataset.total === '4'", timeout=10)
    assert "exact copy of seq 7" in browser.evaluate("document.querySelector('#rejects li').textContent")
    assert browser.evaluate("document.querySelector('#reject-reasons li[data-reason=duplicate]').dataset.n") == "1"

    # Latency: the five observations, p50 and p99 from the histogram's buckets.
    browser.wait_for("document.querySelector('#latency tr[data-hop=event_to_emit]').dataset.count === '5'")
    row = browser.evaluate("[...document.querySelectorAll('#latency tr[data-hop=event_to_emit] td')]"
                           ".map(td => td.textContent)")
    assert row[0] == "tick → pipeline emit" and row[1].endswith(" ms") and row[2].endswith(" ms") and row[3] == "5"
    assert 500 <= float(row[1].split()[0]) <= 1000 and 1000 <= float(row[2].split()[0]) <= 1500
    assert browser.evaluate("document.querySelector('#latency tr[data-hop=on_time_delay] .p50').textContent") == "–"
    browser.evaluate("document.querySelector('#rejects-panel').scrollIntoView()")
    shot = browser.screenshot(ARTIFACTS / "dashboard-rejects.png")
    assert shot.stat().st_size > 10_000
    assert not [line for line in browser.console if "exception" in line]


def test_dashboard_with_a_whole_market(browser: Browser, live_server: Callable[..., LiveServer]) -> None:
    """10,000 symbols: a bounded table, search finds any symbol, top movers are the largest |change|."""
    server = live_server()
    hub = server.state.hub
    count = 10_000
    symbols = [f"S{i:05d}" for i in range(count)]
    # Changes spread over ±1 %, except a few large movers the page must find among 10,000.
    movers = {"S04321": 9.5, "S00007": -8.25, "S09999": 7.75}
    batch = []
    for i, symbol in enumerate(symbols):
        change = movers.get(symbol, ((i * 37) % 200 - 100) / 100)
        batch.append(("trends", bar(symbol, 0, 100.0, change_pct=change, volume=1000.0 + (i % 97))))
    assert server.state.updates.publish_many(batch) == count

    browser.navigate(server.url + "/")
    browser.wait_for("document.body.dataset.connection === 'live'")
    browser.wait_for("document.querySelectorAll('#movers-change li').length === 10")
    shown = browser.evaluate("document.querySelectorAll('#symbols tr[data-symbol]').length")
    assert 0 < shown <= 50, f"{shown} table rows for {count} symbols"
    assert f"{count} in all" in browser.evaluate("document.querySelector('#symbol-count').textContent")
    top = browser.evaluate("[...document.querySelectorAll('#movers-change li')].map(li => li.dataset.symbol)")
    assert top[:3] == ["S04321", "S00007", "S09999"]
    assert browser.evaluate("document.querySelector('#movers-change li .num').textContent") == "+9.50%"

    # Search: one symbol of 10,000, then a prefix.
    browser.evaluate("(() => { const s = document.querySelector('#search'); s.value = 's08642';"
                     " s.dispatchEvent(new Event('input')); })()")
    browser.wait_for("[...document.querySelectorAll('#symbols tr[data-symbol]')].map(r => r.dataset.symbol)"
                     ".join() === 'S08642'", timeout=5)
    browser.evaluate("(() => { const s = document.querySelector('#search'); s.value = 'S0864';"
                     " s.dispatchEvent(new Event('input')); })()")
    browser.wait_for("document.querySelectorAll('#symbols tr[data-symbol]').length === 10", timeout=5)

    # Live: the searched row updates, and a new largest mover goes to the top.
    server.state.updates.publish_bar(bar("S08645", 1, 123.45, change_pct=-12.0))
    browser.wait_for("document.querySelector('#symbols tr[data-symbol=\"S08645\"] .last')?.textContent"
                     " === '123.45'", timeout=5)
    browser.wait_for("document.querySelector('#movers-change li')?.dataset.symbol === 'S08645'", timeout=5)
    # A click on a mover charts it.
    browser.evaluate("document.querySelector('#movers-change li').click()")
    assert browser.wait_for("document.querySelector('#chart').dataset.symbol === 'S08645'")
    shot = browser.screenshot(ARTIFACTS / "dashboard-10000.png")
    assert shot.stat().st_size > 10_000
    assert not [line for line in browser.console if "exception" in line]
