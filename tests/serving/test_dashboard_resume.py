"""The dashboard in headless Chromium against the real broker: a page that loses its WebSocket resumes from the
Kafka positions it saw, so what was published while it was away shows once it is back (more alerts than a
snapshot holds, bar versions of windows a snapshot no longer has); a point the topic no longer retains falls
back to the snapshot the server then sends, and the page resumes again after that."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from serving.hub import Hub
from serving.transport import cut_socket
from tests.serving.cdp import Browser
from tests.serving.conftest import LiveServer
from tests.serving.samples import alert, bar
from tests.serving.test_dashboard_browser import ARTIFACTS
from tests.serving.test_kafka_integration import BASE
from tests.serving.test_resume_kafka import Topics, landed, publish_noting
from tests.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA"]
MINUTES = 10
GAP_ALERTS = 150        # more than the 100 recent alerts a snapshot holds


@pytest.fixture
def topics(make_topic: Callable[..., str], kafka_bootstrap: str) -> Topics:
    return Topics(make_topic, kafka_bootstrap)


def drop_the_page(hub: Hub) -> Callable[[], None]:
    """Cut the page's socket and refuse its reconnects (the server full) until the returned callable is called:
    whatever is published meanwhile is fanned out while the page is away."""
    limits = hub.limits
    hub.limits = dataclasses.replace(limits, max_clients=0)
    for client in list(hub._clients.values()):
        cut_socket(client.mailbox.sock)()

    def restore() -> None:
        hub.limits = limits
    return restore


def fanned_out(hub: Hub, channel: str, placed: list[tuple[int, int, str]]) -> Callable[[], bool]:
    """True once serving's feed has handled (fanned out) every one of `placed` on `channel`."""
    return lambda: all(hub.reached[channel].get(p, -1) >= o for p, o, _ in placed)


def shown_alerts(browser: Browser) -> set[str]:
    return set(browser.evaluate("[...document.querySelectorAll('#alerts li[data-alert-id]')]"
                                ".map(li => li.dataset.alertId)"))


def last_close(symbol: str) -> str:
    return f"document.querySelector('#symbols tr[data-symbol=\"{symbol}\"] .last')?.textContent"


def open_dashboard(browser: Browser, server: LiveServer) -> None:
    browser.navigate(server.url + "/")
    browser.wait_for("document.body.dataset.connection === 'live'")
    browser.wait_for(f"document.querySelectorAll('#symbols tr[data-symbol]').length === {len(SYMBOLS)}")


def test_a_dashboard_that_loses_its_socket_misses_no_alert_and_no_bar(
        browser: Browser, topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    publish_noting(topics.bootstrap, topics.trends,
                   [bar(s, m, 100.0 + i + m, base_ms=BASE) for m in range(MINUTES) for i, s in enumerate(SYMBOLS)])
    first = alert("NVDA", 0, value=4.4, message="NVDA before the gap", base_ms=BASE)
    publish_noting(topics.bootstrap, topics.alerts, [first])
    server = topics.serve(live_server)
    hub = server.state.hub
    open_dashboard(browser, server)
    browser.wait_for(f"Number(document.querySelector('#chart').dataset.bars) === {MINUTES}")   # AAPL's history
    browser.wait_for("document.querySelector('#alerts li')?.textContent.includes('NVDA before the gap')")
    # Live before the gap: the page's resume point moves past these, so the resume does not replay them.
    publish_noting(topics.bootstrap, topics.trends, [bar(s, MINUTES - 1, 100.0 + i + MINUTES - 1, pane_index=2,
                                                         pane="LATE", base_ms=BASE) for i, s in enumerate(SYMBOLS)])
    publish_noting(topics.bootstrap, topics.alerts, [alert("MSFT", 0, message="MSFT live", base_ms=BASE)])
    browser.wait_for("document.querySelector('#alerts li')?.textContent.includes('MSFT live')", timeout=5)
    browser.wait_for(f"[...document.querySelectorAll('#symbols .pane')].every(td => td.textContent.endsWith('LATE'))",
                     timeout=5)

    restore = drop_the_page(hub)
    browser.wait_for("document.body.dataset.connection === 'down'", timeout=5)
    # While the page is away: 150 alerts, and three new windows of AAPL, each an EARLY then an ON_TIME version.
    gap_alerts = [alert(SYMBOLS[i % 4], 1 + i, "volatility" if i % 2 else "volume_spike", value=3.0 + i / 100,
                        message=f"gap alert {i}", base_ms=BASE) for i in range(GAP_ALERTS)]
    gap_bars = [bar("AAPL", m, 150.0 + m + pane / 10, pane_index=pane, base_ms=BASE)
                for m in range(MINUTES, MINUTES + 3) for pane in (0, 1)]
    placed_alerts = publish_noting(topics.bootstrap, topics.alerts, gap_alerts)
    placed_bars = publish_noting(topics.bootstrap, topics.trends, gap_bars)
    wait_for(fanned_out(hub, "alerts", placed_alerts), 20, "serving fanning out the gap's alerts")
    wait_for(fanned_out(hub, "trends", placed_bars), 20, "serving fanning out the gap's bars")
    gap_ids = {a["alert_id"] for a in gap_alerts}
    assert not shown_alerts(browser) & gap_ids, "the page was not away during the gap"
    assert browser.evaluate(last_close("AAPL")) == f"{100.0 + MINUTES - 1:.2f}"

    restore()
    # Every alert of the gap, not just the 100 a snapshot would have brought.
    wait_for(lambda: gap_ids | {first["alert_id"]} <= shown_alerts(browser), 20,
             lambda: f"every alert of the gap shown; missing {len(gap_ids - shown_alerts(browser))} of {GAP_ALERTS}")
    assert browser.evaluate("document.querySelector('#alert-count').textContent") == f"({GAP_ALERTS + 2})"
    # Every window of the gap in AAPL's chart (a snapshot has only the newest), each at its last version.
    browser.wait_for(f"Number(document.querySelector('#chart').dataset.bars) === {MINUTES + 3}", timeout=5)
    assert browser.evaluate(last_close("AAPL")) == f"{150.0 + MINUTES + 2 + 0.1:.2f}"
    # They came as a replay of exactly the gap (not of what the page had seen live before it).
    assert browser.evaluate("Number(document.body.dataset.replayed)") == GAP_ALERTS + len(gap_bars)
    # Then live, from where the replay ended.
    placed = publish_noting(topics.bootstrap, topics.alerts,
                            [alert("TSLA", 500, message="TSLA after the resume", base_ms=BASE)])
    browser.wait_for("document.querySelector('#alerts li')?.textContent.includes('TSLA after the resume')", timeout=5)
    partition, offset, _ = placed[0]
    assert browser.evaluate(f"state.positions.alerts['{partition}']") == offset
    shot = browser.screenshot(ARTIFACTS / "dashboard-resumed.png")
    assert shot.stat().st_size > 10_000
    assert not [line for line in browser.console if "exception" in line]


def test_a_resume_point_the_topic_no_longer_retains_falls_back_to_the_snapshot(
        browser: Browser, topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    publish_noting(topics.bootstrap, topics.trends,
                   [bar(s, m, 100.0 + i + m, base_ms=BASE) for m in range(3) for i, s in enumerate(SYMBOLS)])
    server = topics.serve(live_server)
    hub = server.state.hub
    open_dashboard(browser, server)
    before: dict[str, Any] = browser.evaluate("state.positions.trends")
    assert before and all(isinstance(o, int) for o in before.values())

    restore = drop_the_page(hub)
    browser.wait_for("document.body.dataset.connection === 'down'", timeout=5)
    placed = publish_noting(topics.bootstrap, topics.trends,
                            [bar(s, 3, 200.0 + i, base_ms=BASE) for i, s in enumerate(SYMBOLS)])
    wait_for(fanned_out(hub, "trends", placed), 20, "serving fanning out the gap's bars")
    # Retention deletes everything up to the end, so what the page saw is no longer retained.
    ends = landed(topics.bootstrap, topics.trends)
    admin = AdminClient({"bootstrap.servers": topics.bootstrap})
    for future in admin.delete_records([TopicPartition(topics.trends, p, o) for p, o in ends.items()]).values():
        future.result()
    restore()
    # An error, then the snapshot: the page is live again with the latest bars and the snapshot's resume point.
    for i, symbol in enumerate(SYMBOLS):
        browser.wait_for(f"{last_close(symbol)} === '{200.0 + i:.2f}'", timeout=20)
    assert browser.wait_for("document.body.dataset.connection === 'live'")
    assert any("no longer retained" in line for line in browser.console), browser.console[-5:]
    assert browser.evaluate("state.positions.trends") == {str(p): o - 1 for p, o in ends.items() if o > 0}
    # The alerts channel (nothing deleted there) resumed meanwhile: an empty replay.
    assert browser.evaluate("document.body.dataset.replayed") == "0"

    # Dropped again: it resumes from the snapshot's point, no error this time.
    restore = drop_the_page(hub)
    browser.wait_for("document.body.dataset.connection === 'down'", timeout=5)
    placed = publish_noting(topics.bootstrap, topics.trends, [bar("MSFT", 4, 333.33, base_ms=BASE)])
    wait_for(fanned_out(hub, "trends", placed), 20, "serving fanning out the second gap's bar")
    errors = sum("no longer retained" in line for line in browser.console)
    restore()
    browser.wait_for("Number(document.body.dataset.replayed) === 1", timeout=20)
    browser.wait_for(f"{last_close('MSFT')} === '333.33'", timeout=5)
    assert sum("no longer retained" in line for line in browser.console) == errors
    assert not [line for line in browser.console if "exception" in line]
