"""WebSocket clients: the registry, their subscriptions (indexed by symbol) and the fan-out.

serving.updates hands the hub each batch's new bar and alert versions,
already framed (`fan_out`), under the hub's `lock`, which also orders
subscriptions: a snapshot and the live stream after it neither overlap nor
leave a gap. For every client that wants a message the hub writes it without
blocking through the client's mailbox (serving.transport). A client whose
mailbox is full is cut off (error, then close 1008) instead of slowing the
others.

A subscribe that resumes (`after`/`since`) is replayed from Kafka by
serving.replay; meanwhile that client's live messages of the channel go to
its hand-off (serving.resume.Handoff) instead of its mailbox, and it is kept
out of the subscription index until the hand-off has settled.

Writing directly from the fan-out thread matters: waking one thread per
client per message costs ~0.3 ms of CPU each under the GIL, which capped a
2-core machine at a few hundred clients.
"""
from __future__ import annotations


import itertools
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from market import codec
from serving import protocol
from serving.metrics import Metrics
from serving.resume import Handoff
from serving.store import MarketStore
from serving.transport import CLOSED, EVICTED, Mailbox, cut_socket, text_frame

if TYPE_CHECKING:
    from serving.replay import Replays

log = logging.getLogger(__name__)


class Fresh(NamedTuple):
    """A new bar or alert version to fan out: its channel, symbol, WebSocket frame and Kafka position (None
    for a record that did not come from Kafka)."""

    channel: str
    symbol: str
    frame: bytes
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class Limits:
    """What one serving process grants WebSocket clients (settings WS_*, docs/serving.md)."""

    queue_bytes: int = 1024 * 1024      # backlog per client before it is closed with 1008
    close_grace_s: float = 5.0          # time an evicted client gets to read its close frame
    max_clients: int = 1000             # connections beyond are closed with 1013
    max_symbols: int = 1000             # named symbols per channel and client
    message_rate: float = 20.0          # client messages per second, sustained
    message_burst: int = 40             # client messages at once


class MessageBudget:
    """A token bucket: `rate` messages per second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()

    def spend(self) -> bool:
        """Take one token; False if none is left."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Client:
    """One WebSocket connection's subscriptions, mailbox and message budget."""

    _ids = itertools.count(1)

    def __init__(self, limits: Limits, sock: socket.socket | None) -> None:
        self.id = next(self._ids)
        self.mailbox = Mailbox(limits.queue_bytes, sock)
        self.subscriptions: dict[str, protocol.Subscription] = {
            ch: protocol.Subscription() for ch in protocol.CHANNELS}
        self.budget = MessageBudget(limits.message_rate, limits.message_burst)
        self.heartbeat_seq = 0
        # What the hub's subscription index holds for this client, per channel: (all, named symbols).
        self.indexed: dict[str, tuple[bool, frozenset[str]]] = {ch: (False, frozenset()) for ch in protocol.CHANNELS}
        self.resuming: set[str] = set()     # channels whose replay is running: their subscription is fixed

    def wants(self, channel: str, symbol: str) -> bool:
        """True if this client subscribed to `symbol` on `channel`."""
        return self.subscriptions[channel].matches(symbol)


class Hub:
    """The registry of connected clients and the fan-out of bars and alerts."""

    def __init__(self, store: MarketStore, metrics: Metrics, limits: Limits | None = None) -> None:
        self.store = store      # read for snapshots only; serving.updates writes it
        self.metrics = metrics
        self.limits = limits or Limits()
        self._clients: dict[int, Client] = {}
        # The subscription index: per channel, the clients subscribed to "*"
        # and, per named symbol, the clients that named it. A message costs
        # the clients that want it, not a scan of every client.
        self._everyone: dict[str, dict[int, Client]] = {ch: {} for ch in protocol.CHANNELS}
        self._named: dict[str, dict[str, dict[int, Client]]] = {ch: {} for ch in protocol.CHANNELS}
        # Clients resuming a channel, outside the index until their hand-off settles (serving.resume).
        self._replaying: dict[str, dict[int, tuple[Client, Handoff]]] = {ch: {} for ch in protocol.CHANNELS}
        # Per channel and partition, the highest offset the feed has handled (fanned out if new): the
        # snapshot's resume point, and what a hand-off waits for.
        self.reached: dict[str, dict[int, int]] = {ch: {} for ch in protocol.CHANNELS}
        self.replays: Replays | None = None     # serving.replay; None without a Kafka feed
        # Orders live-state updates and fan-out (serving.updates takes it) and
        # subscriptions. It is not the store's lock, so REST reads never wait
        # for a fan-out to a thousand sockets.
        self.lock = threading.RLock()

    def _reindex(self, client: Client, channel: str, drop: bool = False) -> None:
        """Bring the index in line with `client`'s subscription of `channel` (or take it out: `drop`).

        A client resuming the channel stays out of the index (its hand-off routes its messages) until `_promote`.
        """
        if drop:
            self._replaying[channel].pop(client.id, None)
        elif client.id in self._replaying[channel]:
            return
        was_all, was_named = client.indexed[channel]
        subscription = client.subscriptions[channel]
        now_all = subscription.all and not drop
        # A "*" client gets every symbol through `everyone`; naming one too must not send it twice.
        now_named = frozenset() if drop or now_all else frozenset(subscription.include)
        named = self._named[channel]
        for symbol in was_named - now_named:
            holders = named.get(symbol)
            if holders is not None:
                holders.pop(client.id, None)
                if not holders:
                    del named[symbol]
        for symbol in now_named - was_named:
            named.setdefault(symbol, {})[client.id] = client
        if now_all:
            self._everyone[channel][client.id] = client
        elif was_all:
            self._everyone[channel].pop(client.id, None)
        client.indexed[channel] = (now_all, now_named)

    def _forget(self, client: Client) -> None:
        for channel in protocol.CHANNELS:
            self._reindex(client, channel, drop=True)

    # --- clients -----------------------------------------------------------
    def new_client(self, sock: socket.socket | None = None) -> Client:
        """A client writing to `sock` (None: everything goes through its mailbox), not yet registered."""
        return Client(self.limits, sock)

    def register(self, client: Client) -> bool:
        """Add `client` to the fan-out; False (and not added) when max_clients are connected."""
        with self.lock:
            if len(self._clients) >= self.limits.max_clients:
                return False
            self._clients[client.id] = client
            for channel in protocol.CHANNELS:
                self._reindex(client, channel)
            self.metrics.ws_clients.set(len(self._clients))
        return True

    def connect(self, sock: socket.socket | None = None) -> Client:
        """Register a new client (tests and benchmarks); raises RuntimeError when full."""
        client = self.new_client(sock)
        if not self.register(client):
            raise RuntimeError(f"{self.limits.max_clients} WebSocket clients already connected")
        return client

    def disconnect(self, client: Client) -> None:
        """Forget `client` (idempotent)."""
        client.mailbox.end(CLOSED)
        with self.lock:
            self._clients.pop(client.id, None)
            self._forget(client)
            self.metrics.ws_clients.set(len(self._clients))

    def client_count(self) -> int:
        """Number of connected clients."""
        return len(self._clients)

    def send(self, client: Client, message: dict[str, Any]) -> None:
        """Queue one message for `client` (replies, welcome); overflow closes it like any other."""
        with self.lock:
            self._send(client, message)

    def deliver(self, client: Client, frame: bytes) -> bool:
        """Queue pre-built frames for `client` (a replay's); overflow closes it like any other."""
        return self._offer(client, frame)

    def handle(self, client: Client, raw: str | bytes) -> None:
        """Act on one client message, queueing the replies DESIGN.md §8 prescribes.

        Over its message budget a client is closed (1008): a flood costs this
        check and nothing more.
        """
        if not client.budget.spend():
            self.metrics.ws_rate_limited.inc()
            self.evict(client, 1008, f"message rate limit exceeded (at most {self.limits.message_rate:g}/s, "
                                     f"{self.limits.message_burst} at once)")
            return
        try:
            action = protocol.parse_action(raw)
        except protocol.ProtocolError as exc:
            self.send(client, protocol.error(str(exc)))
            return
        if action.action == "ping":
            self.send(client, {"type": "pong"})
        elif action.action == "subscribe":
            self.subscribe(client, action.channel or "", list(action.symbols), action.resume)
        else:
            self.unsubscribe(client, action.channel or "", list(action.symbols))

    def subscribe(self, client: Client, channel: str, symbols: list[str],
                  resume: protocol.ResumePoint | None = None) -> None:
        """Add a subscription, then queue `subscribed` and the channel's snapshot atomically with the stream;
        with `resume`, hand it to serving.replay instead (`subscribed`, the replay, `replayed`, live)."""
        with self.lock:
            if channel in client.resuming:
                self._send(client, protocol.error(f"a replay of {channel} is running: wait for its \"replayed\""))
                return
            subscription = client.subscriptions[channel]
            if resume is not None and not subscription.empty:
                self._send(client, protocol.error(
                    f"\"after\" and \"since\" resume a channel not subscribed yet, and {channel} is: "
                    f"unsubscribe \"*\" first"))
                return
            if subscription.named_after_add(symbols) > self.limits.max_symbols:
                self._send(client, protocol.error(
                    f"at most {self.limits.max_symbols} symbols per channel; subscribe to \"*\" for all"))
                return
            if resume is None or self.replays is None:
                if resume is not None and not self._send(client, protocol.error(
                        "this server reads no Kafka topics (CONSUME is off): nothing to replay; "
                        "a snapshot follows instead")):
                    return
                self._subscribe_now(client, channel, symbols)
                return
            client.resuming.add(channel)
        self.replays.start(client, channel, symbols, resume)

    def _subscribe_now(self, client: Client, channel: str, symbols: list[str]) -> None:
        # Under the hub lock no bar is applied or fanned out, so the snapshot
        # and the live messages after it neither overlap nor leave a gap.
        client.subscriptions[channel].add(symbols)
        if client.id in self._clients:
            self._reindex(client, channel)
        subscribed = {"type": "subscribed", "channel": channel, "symbols": symbols}
        if self._send(client, subscribed):
            self._snapshot(client, channel, symbols)

    def _snapshot(self, client: Client, channel: str, symbols: list[str]) -> None:
        """Queue the channel's snapshot of `symbols`, with the position per partition it reflects (`after`)."""
        wanted = None if protocol.ALL_SYMBOLS in symbols else set(symbols)
        after = protocol.positions(self.reached[channel])
        if channel == protocol.CHANNEL_TRENDS:
            # The latest bars as kept encoded: 10,000 symbols cost a join, not 10,000 encodings.
            parts = self.store.board.encoded(wanted)
            self._offer(client, text_frame(b'{"type":"snapshot","channel":"trends","after":' + codec.dumps(after)
                                           + b',"data":[' + b",".join(parts) + b"]}"))
            return
        data = (self.store.recent_alerts(protocol.ALERT_SNAPSHOT_SIZE) if wanted is None
                else self.store.alerts(limit=protocol.ALERT_SNAPSHOT_SIZE, symbols=wanted))
        self._send(client, {"type": "snapshot", "channel": channel, "after": after, "data": data})

    # --- resume (serving.replay's thread) ------------------------------------
    def refuse_resume(self, client: Client, channel: str, symbols: list[str], message: str) -> None:
        """A resume that cannot start: an `error`, then what a plain subscribe gives (`subscribed`, snapshot)."""
        with self.lock:
            client.resuming.discard(channel)
            if client.id in self._clients and self._send(client, protocol.error(message)):
                self._subscribe_now(client, channel, symbols)

    def begin_replay(self, client: Client, channel: str, symbols: list[str], handoff: Handoff) -> bool:
        """Subscribe `client` with its live messages of `channel` going to `handoff`, and queue `subscribed`;
        False if the client is gone."""
        with self.lock:
            if client.id not in self._clients:
                return False
            self._replaying[channel][client.id] = (client, handoff)
            client.subscriptions[channel].add(symbols)
            return self._send(client, {"type": "subscribed", "channel": channel, "symbols": symbols})

    def end_replay(self, client: Client, channel: str, handoff: Handoff) -> bool:
        """Write what `handoff` still buffers and switch it to direct delivery, atomically with the fan-out;
        False if the client is gone."""
        with self.lock:
            client.resuming.discard(channel)
            entry = self._replaying[channel].get(client.id)
            if entry is None or entry[1] is not handoff:
                return False
            with handoff.lock:
                rest = handoff.go_direct()
            if rest and not self._offer(client, b"".join(rest)):
                return False
            if handoff.settled(self.reached[channel]):
                self._promote(client, channel)
            return True

    def abandon_replay(self, client: Client, channel: str, symbols: list[str], handoff: Handoff,
                       message: str) -> None:
        """A replay that cannot go on: drop its buffer, an `error`, then the snapshot of `symbols` and the
        live stream."""
        with self.lock:
            client.resuming.discard(channel)
            entry = self._replaying[channel].get(client.id)
            if entry is None or entry[1] is not handoff:
                return
            self._promote(client, channel)
            if self._send(client, protocol.error(message)):
                self._snapshot(client, channel, symbols)

    def _promote(self, client: Client, channel: str) -> None:
        """Move a resumed client from its hand-off into the subscription index."""
        self._replaying[channel].pop(client.id, None)
        self._reindex(client, channel)

    def advance(self, reached: Mapping[tuple[str, int], int]) -> None:
        """The feed has handled (channel, partition) up to these offsets; call under `lock` after the batch's
        fan-out. Promotes the resumed clients whose hand-off has settled."""
        for (channel, partition), offset in reached.items():
            positions = self.reached[channel]
            if offset > positions.get(partition, -1):
                positions[partition] = offset
        for channel, replaying in self._replaying.items():
            if replaying:
                settled = [client for client, handoff in replaying.values() if handoff.settled(self.reached[channel])]
                for client in settled:
                    self._promote(client, channel)

    def unsubscribe(self, client: Client, channel: str, symbols: list[str]) -> None:
        """Remove a subscription and confirm it."""
        with self.lock:
            if channel in client.resuming:
                self._send(client, protocol.error(f"a replay of {channel} is running: wait for its \"replayed\""))
                return
            subscription = client.subscriptions[channel]
            if subscription.named_after_remove(symbols) > self.limits.max_symbols:
                self._send(client, protocol.error(
                    f"at most {self.limits.max_symbols} symbols can be excluded from \"*\""))
                return
            subscription.remove(symbols)
            if client.id in self._clients:
                self._reindex(client, channel)
            message = {"type": "unsubscribed", "channel": channel, "symbols": symbols}
            self._send(client, message)

    # --- fan-out (consumer thread) -----------------------------------------
    def fan_out(self, fresh: list[Fresh]) -> int:
        """Write each new version to the clients that want it, in order; call under `lock`.
        The number of messages handed to clients (or to their hand-offs)."""
        started = time.perf_counter()
        sent = queued = 0
        wanted: dict[int, tuple[Client, list[bytes]]] = {}
        # Per (client, channel): a client may resume both channels, each with its own hand-off.
        resuming: dict[tuple[int, str], tuple[Client, Handoff, list[tuple[int | None, int | None, bytes]]]] = {}
        for channel, symbol, frame, partition, offset in fresh:
            replaying = self._replaying[channel]
            if replaying:
                for cid, (client, handoff) in replaying.items():
                    if client.subscriptions[channel].matches(symbol):
                        resuming.setdefault((cid, channel), (client, handoff, []))[2].append(
                            (partition, offset, frame))
            for clients in (self._everyone[channel], self._named[channel].get(symbol)):
                if not clients:
                    continue
                for cid, client in clients.items():
                    if symbol in client.subscriptions[channel].exclude:
                        continue
                    entry = wanted.get(cid)
                    if entry is None:
                        wanted[cid] = (client, [frame])
                    else:
                        entry[1].append(frame)
        for client, handoff, items in resuming.values():
            now = handoff.live(items)
            if now is None:
                self.metrics.ws_overflows.inc()
                self.evict(client, 1008, f"live messages waiting for the end of the replay passed "
                                         f"{handoff.max_bytes} bytes: client too slow")
                continue
            if now:
                # A client is in the index or resuming per channel, never both: what `wanted` holds for it
                # already is another channel's.
                entry = wanted.get(client.id)
                if entry is None:
                    wanted[client.id] = (client, now)
                else:
                    entry[1].extend(now)
        everything: bytes | None = None     # the whole batch, joined once for every client that wants it all
        for client, parts in wanted.values():
            if len(parts) == 1:
                buffer = parts[0]
            elif len(parts) == len(fresh):
                if everything is None:
                    everything = b"".join(entry.frame for entry in fresh)
                buffer = everything
            else:
                buffer = b"".join(parts)
            before = client.mailbox.queued
            if self._offer(client, buffer):
                sent += len(parts)
            queued += client.mailbox.queued - before
        if sent:
            self.metrics.ws_sent.inc(sent)
        if queued:
            self.metrics.ws_queued.inc(queued)
        self.metrics.fanout.observe(time.perf_counter() - started)
        return sent

    def _send(self, client: Client, message: dict) -> bool:
        """Queue one protocol message for `client` (see `_offer`)."""
        return self._offer(client, text_frame(protocol.encode(message)))

    def _offer(self, client: Client, frame: bytes) -> bool:
        if client.mailbox.offer(frame):
            return True
        if client.mailbox.state is None:
            log.warning("WebSocket client %d overflowed its queue of %d bytes: closing it (1008)",
                        client.id, client.mailbox.max_bytes)
            self.metrics.ws_overflows.inc()
            self.evict(client, 1008, f"queue of {client.mailbox.max_bytes} bytes overflowed: client too slow")
        return False

    def evict(self, client: Client, code: int, reason: str) -> None:
        """Take `client` out of the fan-out, drop its backlog, and have its writer send an error and close `code`."""
        client.mailbox.end(EVICTED, code, reason)
        with self.lock:
            self._clients.pop(client.id, None)
            self._forget(client)
            self.metrics.ws_clients.set(len(self._clients))
        # A client that reads nothing never takes its close frame; its
        # thread would block in sendall() for good without this cut.
        timer = threading.Timer(self.limits.close_grace_s, cut_socket(client.mailbox.sock))
        timer.daemon = True
        timer.start()

    def heartbeat(self, client: Client) -> None:
        """Queue the next heartbeat of `client` (a full queue closes it like any other message)."""
        client.heartbeat_seq += 1
        self.send(client, {"type": "heartbeat", "seq": client.heartbeat_seq})
