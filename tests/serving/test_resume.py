"""Gap-free resume without a broker: the protocol's `after`/`since`, start offsets, the version rule, the
hand-off of a replay to the live stream (alone, under random interleavings, and inside the hub), and a server
without Kafka answering a resume with an error and a snapshot."""
from __future__ import annotations

import random
from urllib.parse import parse_qs
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from market.schema import MIN_EVENT_MS
from serving import protocol
from serving.protocol import ProtocolError, ResumePoint
from serving.resume import Handoff, NewVersions, ResumeError, start_offsets
from serving.updates import Update
from tests.serving.conftest import LiveServer
from tests.serving.samples import alert, bar
from tests.serving.test_fanout import Parts, messages
from tests.serving.test_websocket import assert_silent, connect, recv, send

NOW_MS = 1_764_063_000_000


# --- protocol -----------------------------------------------------------------------------------
def parse(message: dict[str, Any]) -> protocol.Action:
    from market import codec
    return protocol.parse_action(codec.dumps(message), now_ms=NOW_MS)


def test_subscribe_with_after_or_since() -> None:
    action = parse({"action": "subscribe", "channel": "trends", "symbols": ["AAPL"], "after": {"0": 41, "2": -1}})
    assert action.resume == ResumePoint(after={0: 41, 2: -1})
    assert parse({"action": "subscribe", "channel": "alerts", "after": {}}).resume == ResumePoint(after={})
    assert parse({"action": "subscribe", "channel": "trends", "since": NOW_MS - 5000}).resume == \
        ResumePoint(since=NOW_MS - 5000)
    assert parse({"action": "subscribe", "channel": "trends"}).resume is None


@pytest.mark.parametrize("extra, words", [
    ({"after": [1, 2]}, "must be an object"),
    ({"after": "0:41"}, "must be an object"),
    ({"after": {"x": 1}}, "not a partition number"),
    ({"after": {"-1": 1}}, "not a partition number"),
    ({"after": {"²": 1}}, "not a partition number"),
    ({"after": {"0": -2}}, "integer >= -1"),
    ({"after": {"0": 1.5}}, "integer >= -1"),
    ({"after": {"0": True}}, "integer >= -1"),
    ({"after": {"0": "41"}}, "integer >= -1"),
    ({"after": {"0": 2**63}}, "integer >= -1"),
    ({"after": {str(p): 0 for p in range(1025)}}, "at most 1024"),
    ({"since": "yesterday"}, "epoch milliseconds"),
    ({"since": 1.5e12}, "epoch milliseconds"),
    ({"since": False}, "epoch milliseconds"),
    ({"since": NOW_MS // 1000}, "not seconds"),
    ({"since": MIN_EVENT_MS - 1}, "before the year 2000"),
    ({"since": NOW_MS + 3_600_000}, "in the future"),
    ({"after": {"0": 1}, "since": NOW_MS}, "not both"),
])
def test_bad_resume_points_are_refused_with_a_reason(extra: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse({"action": "subscribe", "channel": "trends", "symbols": ["AAPL"], **extra})


def query(text: str) -> list[protocol.Action]:
    """The subscribes of `/ws?<text>`, its parameters read as the handler reads them (each name's values)."""
    return protocol.parse_query(parse_qs(text, keep_blank_values=True), now_ms=NOW_MS)


def test_the_query_string_resumes_with_after_or_since() -> None:
    assert query("channel=trends&symbols=AAPL,msft&after=0:123,2:-1") == [protocol.Action(
        "subscribe", "trends", ("AAPL", "MSFT"), ResumePoint(after={0: 123, 2: -1}))]
    assert query("channel=alerts&after=") == [protocol.Action("subscribe", "alerts", ("*",), ResumePoint(after={}))]
    since = ResumePoint(since=NOW_MS - 5000)
    assert query(f"channel=trends,alerts&since={NOW_MS - 5000}") == [
        protocol.Action("subscribe", "trends", ("*",), since), protocol.Action("subscribe", "alerts", ("*",), since)]
    assert query("channel=trends,trends") == [protocol.Action("subscribe", "trends", ("*",))]
    assert query("") == [] and query("symbols=AAPL") == []


@pytest.mark.parametrize("text, words", [
    ("channel=trends,alerts&after=0:1", "one channel"),
    ("after=0:1", "name it"),
    (f"since={NOW_MS}", "name it"),
    ("channel=trends&after=0", "not partition:offset"),
    ("channel=trends&after=0:x", "not partition:offset"),
    ("channel=trends&after=0:1.5", "not partition:offset"),
    ("channel=trends&after=0:1:2", "not partition:offset"),
    ("channel=trends&after=:1", "not a partition number"),
    ("channel=trends&after=-1:1", "not a partition number"),
    ("channel=trends&after=0:-2", "integer >= -1"),
    (f"channel=trends&after=0:{2**63}", "integer >= -1"),
    ("channel=trends&after=0:1,00:2", "a partition twice"),
    ("channel=trends&after=" + ",".join(f"{p}:0" for p in range(1025)), "at most 1024"),
    ("channel=trends&after=0:1&after=1:2", "given 2 times"),
    ("channel=trends&since=", "epoch milliseconds"),
    ("channel=trends&since=yesterday", "epoch milliseconds"),
    (f"channel=trends&since={NOW_MS // 1000}", "not seconds"),
    (f"channel=trends&since={NOW_MS + 3_600_000}", "in the future"),
    (f"channel=trends&after=0:1&since={NOW_MS}", "not both"),
    ("channel=trends,weather&after=0:1", "unknown channel"),
    ("channel=trends&symbols=&after=0:1", "symbols is empty"),
])
def test_bad_resume_points_in_the_query_string_are_refused_with_a_reason(text: str, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        query(text)


def test_unsubscribe_takes_no_resume_point() -> None:
    with pytest.raises(ProtocolError, match="belong to a subscribe"):
        parse({"action": "unsubscribe", "channel": "trends", "after": {"0": 1}})


def test_live_and_replayed_messages_carry_their_kafka_position() -> None:
    from market import codec
    data = codec.dumps(bar("AAPL"))
    assert codec.loads(protocol.record_message("trends", 2, 41, data)) == \
        {"type": "trend", "partition": 2, "offset": 41, "data": bar("AAPL")}
    assert codec.loads(protocol.record_message("alerts", None, None, codec.dumps(alert()))) == \
        {"type": "alert", "partition": None, "offset": None, "data": alert()}
    assert protocol.replayed("trends", 3, {1: 7, 0: 5}) == \
        {"type": "replayed", "channel": "trends", "count": 3, "after": {"0": 5, "1": 7}}


# --- start offsets ------------------------------------------------------------------------------------
WATERMARKS = {0: (0, 10), 1: (5, 20), 2: (0, 0)}     # partition 1 lost offsets 0-4 to retention; 2 is empty


def test_after_starts_past_the_offsets_seen_and_an_absent_partition_from_the_oldest_retained() -> None:
    assert start_offsets(ResumePoint(after={0: 3, 1: 9}), WATERMARKS) == {0: 4, 1: 10, 2: 0}
    assert start_offsets(ResumePoint(after={}), WATERMARKS) == {0: 0, 1: 5, 2: 0}
    assert start_offsets(ResumePoint(after={0: 9, 1: 4, 2: -1}), WATERMARKS) == {0: 10, 1: 5, 2: 0}


@pytest.mark.parametrize("after, words", [
    ({1: 2}, "offset 2 of partition 1 is no longer retained: retention deleted partition 1 up to offset 4"),
    ({0: 10}, "beyond its end"),
    ({2: 0}, "beyond its end"),
    ({3: 0}, "no partition 3"),
])
def test_after_a_point_the_topic_cannot_serve(after: dict[int, int], words: str) -> None:
    with pytest.raises(ResumeError, match=words):
        start_offsets(ResumePoint(after=after), WATERMARKS)


def test_since_starts_at_the_first_offset_at_or_after_it() -> None:
    point = ResumePoint(since=NOW_MS)
    assert start_offsets(point, WATERMARKS, {0: 4, 1: 12, 2: -1}) == {0: 4, 1: 12, 2: 0}
    assert start_offsets(point, {0: (0, 10)}, {0: -1}) == {0: 10}     # nothing since: from the end
    assert start_offsets(point, {0: (0, 10)}, {0: 0}) == {0: 0}       # nothing was ever deleted
    with pytest.raises(ResumeError, match="older than what partition 1 retains"):
        start_offsets(point, WATERMARKS, {0: 4, 1: 5, 2: -1})


# --- the version rule --------------------------------------------------------------------------------
def test_new_versions_follow_the_live_rule() -> None:
    versions = NewVersions()
    assert versions.is_new("trends", bar("AAPL", 0, pane_index=0))
    assert versions.is_new("trends", bar("aapl", 0, pane_index=1))
    assert not versions.is_new("trends", bar("AAPL", 0, pane_index=0))          # older
    assert not versions.is_new("trends", bar("AAPL", 0, pane_index=1))          # the same again
    assert versions.is_new("trends", bar("AAPL", 0, pane_index=1, tick_count=11))   # same pane, more ticks
    assert versions.is_new("trends", bar("AAPL", 1, pane_index=0))              # another window
    assert versions.is_new("alerts", alert("AAPL", 0))
    assert not versions.is_new("alerts", alert("AAPL", 0))


# --- the hand-off -------------------------------------------------------------------------------------
def frame(partition: int, offset: int) -> bytes:
    return f"{partition}:{offset}".encode()


def test_feed_ahead_the_replay_stops_where_the_live_stream_took_over() -> None:
    handoff = Handoff({0: 5}, max_bytes=1000)
    assert handoff.live([(0, 8, frame(0, 8)), (0, 9, frame(0, 9))]) == []      # buffered
    with handoff.lock:
        assert [handoff.claim(0, o) for o in (5, 6, 7, 8)] == [True, True, True, False]
    assert handoff.covered == {0: 7}
    with handoff.lock:
        assert handoff.go_direct() == [frame(0, 8), frame(0, 9)]
    assert handoff.live([(0, 10, frame(0, 10))]) == [frame(0, 10)]


def test_feed_behind_what_the_replay_or_the_client_has_is_dropped() -> None:
    handoff = Handoff({0: 5, 1: 3}, max_bytes=1000)
    assert handoff.live([(0, 2, frame(0, 2)), (0, 4, frame(0, 4))]) == []   # the client had up to 4
    with handoff.lock:
        assert all(handoff.claim(0, o) for o in range(5, 9))               # the replay ran ahead of the feed
    assert handoff.live([(0, o, frame(0, o)) for o in range(5, 11)]) == []  # 5-8 dropped, 9-10 buffered
    with handoff.lock:
        assert handoff.go_direct() == [frame(0, 9), frame(0, 10)]
    assert handoff.live([(0, 8, frame(0, 8)), (0, 11, frame(0, 11))]) == [frame(0, 11)]
    assert not handoff.settled({0: 10})                 # the feed has not handled partition 1 up to 2 yet
    assert handoff.settled({0: 8, 1: 2}) and not handoff.settled({0: 7, 1: 3})


def test_the_buffer_is_bounded_and_handed_over_in_order_in_chunks() -> None:
    handoff = Handoff({0: 0}, max_bytes=30)
    assert handoff.live([(0, o, b"x" * 10) for o in range(3)]) == []
    assert handoff.live([(0, 3, b"y")]) is None                          # 31 bytes: the client is too slow
    handoff = Handoff({0: 0}, max_bytes=1000)
    handoff.live([(0, o, frame(0, o)) for o in range(10, 20)])
    with handoff.lock:
        assert handoff.take(8) == [frame(0, 10), frame(0, 11)]          # 4 + 4 bytes
        assert handoff.take(1) == [frame(0, 12)]                         # at least one
        assert handoff.go_direct() == [frame(0, o) for o in range(13, 20)]
    assert handoff.buffered_bytes == 0


class WithoutDropRule(Handoff):
    """A broken hand-off: the live stream does not drop what the replay (or the client) already has."""

    def live(self, items: Any) -> Any:
        covered, self.covered = self.covered, {}
        try:
            return super().live(items)
        finally:
            self.covered = covered


class WithoutStopRule(Handoff):
    """A broken hand-off: the replay reads on past the first buffered live message."""

    def claim(self, partition: int, offset: int) -> bool:
        first, self.first_live = self.first_live, {}
        try:
            return super().claim(partition, offset)
        finally:
            self.first_live = first


def simulate(seed: int, kind: type[Handoff] = Handoff) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """One random run of a partitioned log, a feed (fan-out) at its own pace, a replay and a hand-over, the three
    interleaved at random; (what the client got, what it should have got) per partition.

    The feed may be behind the client's point or ahead of it, and messages keep arriving throughout.
    """
    rng = random.Random(seed)
    parts = range(3)
    total = {p: rng.randint(0, 40) for p in parts}          # messages the log will hold at the end
    high = {p: rng.randint(0, total[p]) for p in parts}     # written when the client reconnects
    after = {p: rng.randint(-1, high[p] - 1) for p in parts if rng.random() < 0.8}
    fed = {p: rng.randint(0, high[p]) for p in parts}       # next offset the feed fans out
    start = {p: after.get(p, -1) + 1 for p in parts}
    handoff = kind(start, max_bytes=10**9)
    got: dict[int, list[int]] = {p: [] for p in parts}
    promoted = False

    def write(frames: list[bytes]) -> None:
        for f in frames:
            p, o = map(int, f.split(b":"))
            got[p].append(o)

    def feed_step() -> bool:
        ready = [p for p in parts if fed[p] < high[p]]
        if not ready:
            return False
        p = rng.choice(ready)
        if promoted:
            write([frame(p, fed[p])])
        else:
            now = handoff.live([(p, fed[p], frame(p, fed[p]))])
            assert now is not None
            write(now)
        fed[p] += 1
        return True

    def produce_step() -> bool:
        ready = [p for p in parts if high[p] < total[p]]
        if ready:
            high[rng.choice(ready)] += 1
        return bool(ready)

    def background() -> None:
        nonlocal promoted
        for _ in range(rng.randint(0, 3)):
            rng.choice((feed_step, produce_step))()
        if handoff.direct and not promoted and handoff.settled({p: fed[p] - 1 for p in parts}):
            promoted = True

    for _ in range(rng.randint(0, 5)):          # between joining the fan-out and reading the end offsets
        background()
    end = dict(high)
    position = dict(start)
    todo = {p for p in parts if start[p] < end[p]}
    while todo:
        background()
        p = rng.choice(sorted(todo))
        with handoff.lock:
            if position[p] >= end[p] or not handoff.claim(p, position[p]):
                todo.discard(p)
                continue
        write([frame(p, position[p])])
        position[p] += 1
    while True:                                 # the buffer in chunks, the feed going on meanwhile
        background()
        with handoff.lock:
            chunk = handoff.take(rng.randint(1, 12))
        if not chunk:
            break
        write(chunk)
    with handoff.lock:
        write(handoff.go_direct())
    while any(fed[p] < total[p] for p in parts):
        background()
    return got, {p: list(range(start[p], total[p])) for p in parts}


def test_every_interleaving_of_feed_replay_and_hand_over_delivers_each_message_once_in_order() -> None:
    for seed in range(3000):
        got, expected = simulate(seed)
        assert got == expected, f"seed {seed}"


@pytest.mark.parametrize("broken", [WithoutDropRule, WithoutStopRule])
def test_the_simulation_catches_a_broken_hand_off(broken: type[Handoff]) -> None:
    runs = [simulate(seed, broken) for seed in range(300)]
    assert any(got != expected for got, expected in runs)


# --- inside the hub (no broker: the test plays the feed) -----------------------------------------------
def positioned(symbol: str, minute: int, pane: int, partition: int, offset: int) -> Update:
    return Update("trends", bar(symbol, minute, 100.0 + pane, pane_index=pane), True, partition, offset)


def test_the_hub_routes_a_resuming_client_through_its_hand_off(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    hub, updates = parts.hub, parts.updates
    updates.channels = {"bars": "trends"}
    client = hub.connect()
    hub.subscribe(client, "alerts", ["*"])
    messages(client)
    handoff = Handoff({0: 3}, max_bytes=10**6)
    assert hub.begin_replay(client, "trends", ["AAPL"], handoff)
    assert not hub._named["trends"] and client.id in hub._replaying["trends"]
    updates.apply([positioned("AAPL", 0, 0, 0, 5), positioned("MSFT", 0, 0, 0, 6),
                   positioned("AAPL", 0, 1, 0, 7)], {("bars", 0): 8})
    updates.publish_alert(alert("AAPL", 0))                 # another channel: straight to the client
    got = messages(client)
    assert [m["type"] for m in got] == ["subscribed", "alert"]
    client.resuming.add("trends")                           # (hub.subscribe marks it; the test plays the replay)
    hub.subscribe(client, "trends", ["MSFT"])               # the channel's subscription is fixed meanwhile
    hub.unsubscribe(client, "trends", ["AAPL"])
    assert [m["type"] for m in messages(client)] == ["error", "error"]
    with handoff.lock:
        assert handoff.claim(0, 3) and handoff.claim(0, 4) and not handoff.claim(0, 5)
    assert hub.end_replay(client, "trends", handoff)
    assert [(m["partition"], m["offset"], m["data"]["pane_index"]) for m in messages(client)] == [(0, 5, 0), (0, 7, 1)]
    assert client.id not in hub._replaying["trends"]        # the feed was past covered: promoted at once
    assert set(hub._named["trends"]) == {"AAPL"}
    updates.apply([positioned("AAPL", 0, 2, 0, 8)], {("bars", 0): 9})
    assert [m["offset"] for m in messages(client)] == [8]


def test_a_hand_off_ahead_of_the_feed_drops_what_the_feed_re_reads_until_it_passes(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    hub, updates = parts.hub, parts.updates
    updates.channels = {"bars": "trends"}
    client = hub.connect()
    handoff = Handoff({0: 0}, max_bytes=10**6)
    assert hub.begin_replay(client, "trends", ["*"], handoff)
    with handoff.lock:
        assert all(handoff.claim(0, o) for o in range(6))   # the replay read 0-5; the feed has read nothing
    assert hub.end_replay(client, "trends", handoff)
    assert client.id in hub._replaying["trends"]            # not settled: the feed is behind
    messages(client)
    updates.apply([positioned("AAPL", 0, k, 0, k) for k in range(8)], {("bars", 0): 8})
    assert [m["offset"] for m in messages(client) if m["type"] == "trend"] == [6, 7]
    assert client.id not in hub._replaying["trends"] and client.id in hub._everyone["trends"]
    hub.disconnect(client)
    assert not hub._everyone["trends"] and not hub._replaying["trends"]


def test_a_client_resuming_both_channels_has_a_hand_off_for_each(tmp_path: Path) -> None:
    """One batch with a bar and an alert: each goes to its own channel's hand-off (they were once mixed up)."""
    parts = Parts(tmp_path)
    hub, updates = parts.hub, parts.updates
    client = hub.connect()
    trends, alerts = Handoff({0: 0}, max_bytes=10**6), Handoff({0: 0}, max_bytes=10**6)
    assert hub.begin_replay(client, "alerts", ["*"], alerts) and hub.begin_replay(client, "trends", ["*"], trends)
    messages(client)
    for first in ("alerts", "trends"):
        batch = [Update("alerts", alert("AAPL", 0 if first == "alerts" else 1), True, 0, 7 if first == "alerts" else 8),
                 positioned("AAPL", 0, 0 if first == "alerts" else 1, 0, 5 if first == "alerts" else 6)]
        updates.apply(batch if first == "alerts" else batch[::-1])
    with trends.lock, alerts.lock:
        assert trends.first_live == {0: 5} and alerts.first_live == {0: 7}
        assert [b'{"type":"trend"' in f for f in trends.go_direct()] == [True, True]
        assert [b'{"type":"alert"' in f for f in alerts.go_direct()] == [True, True]


def test_a_resuming_client_too_slow_for_the_live_stream_is_closed_with_1008(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    client = parts.hub.connect()
    handoff = Handoff({0: 0}, max_bytes=2000)
    assert parts.hub.begin_replay(client, "trends", ["*"], handoff)
    for k in range(10):
        parts.updates.apply([positioned("AAPL", 0, k, 0, k)])
    assert client.mailbox.state == "evicted" and client.mailbox.close_code == 1008
    assert "replay" in client.mailbox.close_reason
    assert client.id not in parts.hub._replaying["trends"]


# --- a server without Kafka ------------------------------------------------------------------------------
@pytest.fixture
def server(live_server: Callable[..., LiveServer]) -> LiveServer:
    server = live_server({"WS_HEARTBEAT_S": 30})
    server.state.updates.publish_bar(bar("AAPL", 0, 190.0))
    return server


def test_without_kafka_a_resume_is_an_error_then_a_snapshot(server: LiveServer) -> None:
    ws = connect(server)
    recv(ws)
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["AAPL"], "after": {"0": 3}})
    error = recv(ws)
    assert error["type"] == "error" and "nothing to replay" in error["message"]
    assert recv(ws) == {"type": "subscribed", "channel": "trends", "symbols": ["AAPL"]}
    snapshot = recv(ws)
    assert snapshot["type"] == "snapshot" and snapshot["after"] == {} and len(snapshot["data"]) == 1
    server.state.updates.publish_bar(bar("AAPL", 1, 191.0))
    assert recv(ws) == {"type": "trend", "partition": None, "offset": None, "data": bar("AAPL", 1, 191.0)}
    ws.close()


def test_without_kafka_a_query_string_resume_is_an_error_then_a_snapshot(server: LiveServer) -> None:
    ws = connect(server, "?channel=trends&symbols=AAPL&after=0:3")
    assert recv(ws)["type"] == "welcome"
    error = recv(ws)
    assert error["type"] == "error" and "nothing to replay" in error["message"]
    assert recv(ws) == {"type": "subscribed", "channel": "trends", "symbols": ["AAPL"]}
    assert recv(ws)["type"] == "snapshot"
    ws.close()
    bad = connect(server, "?channel=trends,weather&after=0:3")     # nothing subscribed, not even trends
    assert recv(bad)["type"] == "welcome"
    error = recv(bad)
    assert error["type"] == "error" and error["message"].startswith("query string: unknown channel")
    server.state.updates.publish_bar(bar("AAPL", 1, 191.0))
    assert_silent(bad)
    send(bad, {"action": "ping"})
    assert recv(bad) == {"type": "pong"}
    bad.close()


def test_bad_resume_values_are_an_error_and_the_connection_stays_open(server: LiveServer) -> None:
    ws = connect(server)
    recv(ws)
    for extra in ({"after": {"zero": 1}}, {"after": {"0": -5}}, {"since": "now"}, {"since": 1_764_063_000},
                  {"after": {"0": 1}, "since": NOW_MS}):
        send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["AAPL"], **extra})
        message = recv(ws)
        assert message["type"] == "error" and message["message"], extra
    server.state.updates.publish_bar(bar("AAPL", 1, 191.0))
    assert_silent(ws)                                        # nothing was subscribed
    send(ws, {"action": "ping"})
    assert recv(ws) == {"type": "pong"}
    ws.close()
