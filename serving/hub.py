"""WebSocket clients and fan-out: one bounded mailbox per client, filled without ever blocking.

The consumer thread hands each new bar or alert to `Hub.publish_*`, which
encodes it once and offers it to every subscribed client's mailbox. A client
whose mailbox is full is cut off (error, then close 1008) instead of slowing
the others; its own thread drains the mailbox onto the socket.
"""
from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from serving import protocol
from serving.metrics import Metrics
from serving.store import Alert, Bar, MarketStore, alert_identity, bar_identity

log = logging.getLogger(__name__)

CLOSED = "closed"
OVERFLOW = "overflow"


class Mailbox:
    """A bounded FIFO of encoded messages with close/overflow states that wake the reader."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._items: deque[str] = deque()
        self._cond = threading.Condition(threading.Lock())
        self.state: str | None = None   # None while open, else CLOSED or OVERFLOW

    def offer(self, item: str) -> bool:
        """Append without blocking; False if the mailbox is full or no longer open."""
        with self._cond:
            if self.state is not None or len(self._items) >= self.size:
                return False
            self._items.append(item)
            self._cond.notify()
            return True

    def end(self, state: str) -> None:
        """Stop the mailbox: CLOSED keeps nothing pending, OVERFLOW drops the backlog too."""
        with self._cond:
            if self.state is None:
                self.state = state
            self._items.clear()
            self._cond.notify_all()

    def take(self, timeout: float) -> str | None:
        """The next message, or None after `timeout` s with nothing; raises _Ended once stopped."""
        with self._cond:
            if not self._items and self.state is None:
                self._cond.wait(timeout)
            if self.state is not None:
                raise _Ended(self.state)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class _Ended(Exception):
    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class Client:
    """One WebSocket connection's subscriptions and mailbox."""

    _ids = itertools.count(1)

    def __init__(self, queue_size: int) -> None:
        self.id = next(self._ids)
        self.mailbox = Mailbox(queue_size)
        self.subscriptions: dict[str, protocol.Subscription] = {
            ch: protocol.Subscription() for ch in protocol.CHANNELS}
        self.heartbeat_seq = 0

    def wants(self, channel: str, symbol: str) -> bool:
        """True if this client subscribed to `symbol` on `channel`."""
        return self.subscriptions[channel].matches(symbol)


class Hub:
    """The registry of connected clients and the fan-out of bars and alerts."""

    def __init__(self, store: MarketStore, metrics: Metrics, queue_size: int, close_grace_s: float) -> None:
        self.store = store
        self.metrics = metrics
        self.queue_size = queue_size
        self.close_grace_s = close_grace_s
        self._clients: dict[int, Client] = {}
        # Called with a client that overflowed, to cut its socket if it will not take the close frame.
        self._cutters: dict[int, Callable[[], None]] = {}

    # --- clients -----------------------------------------------------------
    def connect(self, cutter: Callable[[], None] | None = None) -> Client:
        """Register a new client; `cutter` force-closes its socket."""
        client = Client(self.queue_size)
        with self.store.lock:
            self._clients[client.id] = client
            if cutter is not None:
                self._cutters[client.id] = cutter
            self.metrics.ws_clients.set(len(self._clients))
        return client

    def disconnect(self, client: Client) -> None:
        """Forget `client` (idempotent)."""
        client.mailbox.end(CLOSED)
        with self.store.lock:
            self._clients.pop(client.id, None)
            self._cutters.pop(client.id, None)
            self.metrics.ws_clients.set(len(self._clients))

    def client_count(self) -> int:
        """Number of connected clients."""
        return len(self._clients)

    def send(self, client: Client, message: dict[str, Any]) -> None:
        """Queue one message for `client` (replies, welcome); overflow closes it like any other."""
        with self.store.lock:
            self._offer(client, protocol.encode(message))

    def handle(self, client: Client, raw: str | bytes) -> None:
        """Act on one client message, queueing the replies DESIGN.md §8 prescribes."""
        try:
            action = protocol.parse_action(raw)
        except protocol.ProtocolError as exc:
            self.send(client, protocol.error(str(exc)))
            return
        if action.action == "ping":
            self.send(client, {"type": "pong"})
        elif action.action == "subscribe":
            self.subscribe(client, action.channel or "", list(action.symbols))
        else:
            self.unsubscribe(client, action.channel or "", list(action.symbols))

    def subscribe(self, client: Client, channel: str, symbols: list[str]) -> None:
        """Add a subscription, then queue `subscribed` and the channel's snapshot atomically with the stream."""
        # Under the store lock no bar is applied or fanned out, so the snapshot
        # and the live messages after it neither overlap nor leave a gap.
        with self.store.lock:
            sub = client.subscriptions[channel]
            sub.add(symbols)
            if not self._offer(client, protocol.encode(
                    {"type": "subscribed", "channel": channel, "symbols": symbols})):
                return
            wanted = (None if protocol.ALL_SYMBOLS in symbols else set(symbols))
            if channel == protocol.CHANNEL_TRENDS:
                data: list[dict[str, Any]] = self.store.latest(wanted)
            else:
                data = self.store.alerts(limit=protocol.ALERT_SNAPSHOT_SIZE, symbols=wanted)
            self._offer(client, protocol.encode({"type": "snapshot", "channel": channel, "data": data}))

    def unsubscribe(self, client: Client, channel: str, symbols: list[str]) -> None:
        """Remove a subscription and confirm it."""
        with self.store.lock:
            client.subscriptions[channel].remove(symbols)
            self._offer(client, protocol.encode({"type": "unsubscribed", "channel": channel, "symbols": symbols}))

    # --- fan-out (consumer thread) -----------------------------------------
    def publish_bar(self, bar: Bar) -> bool:
        """Store `bar`; if it is a new version, push it to subscribers. True if it was new."""
        symbol, _, _ = bar_identity(bar)
        with self.store.lock:
            if not self.store.apply_bar(bar):
                return False
            self._fan_out(protocol.CHANNEL_TRENDS, symbol, {"type": "trend", "data": bar})
            return True

    def publish_alert(self, alert: Alert) -> bool:
        """Store `alert`; if its id is new, push it to subscribers. True if it was new."""
        _, symbol = alert_identity(alert)
        with self.store.lock:
            if not self.store.apply_alert(alert):
                return False
            self._fan_out(protocol.CHANNEL_ALERTS, symbol, {"type": "alert", "data": alert})
            return True

    def _fan_out(self, channel: str, symbol: str, message: dict[str, Any]) -> None:
        text: str | None = None   # encoded once, only if someone wants it
        for client in list(self._clients.values()):
            if client.wants(channel, symbol):
                if text is None:
                    text = protocol.encode(message)
                self._offer(client, text)

    def _offer(self, client: Client, text: str) -> bool:
        if client.mailbox.offer(text):
            return True
        if client.mailbox.state is None:
            self._overflow(client)
        return False

    def _overflow(self, client: Client) -> None:
        log.warning("WebSocket client %d overflowed its queue of %d messages: closing it (1008)",
                    client.id, client.mailbox.size)
        self.metrics.ws_overflows.inc()
        client.mailbox.end(OVERFLOW)
        self._clients.pop(client.id, None)
        self.metrics.ws_clients.set(len(self._clients))
        cutter = self._cutters.pop(client.id, None)
        if cutter is not None:
            # A client that reads nothing never takes its close frame; its
            # sender thread would block in send() for good without this.
            timer = threading.Timer(self.close_grace_s, cutter)
            timer.daemon = True
            timer.start()

    def heartbeat(self, client: Client) -> dict[str, Any]:
        """The next heartbeat message of `client`."""
        client.heartbeat_seq += 1
        return {"type": "heartbeat", "seq": client.heartbeat_seq}


def cut_socket(sock: socket.socket | None) -> Callable[[], None]:
    """A callable that shuts `sock` down, unblocking a send stuck on a client that reads nothing."""
    def cut() -> None:
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: nothing to unblock
    return cut


def pump(hub: Hub, client: Client, send: Callable[[str], None], close: Callable[[int, str], None],
         heartbeat_s: float) -> None:
    """Move `client`'s mailbox onto its socket until it closes; heartbeats when idle; 1008 on overflow."""
    next_beat = time.monotonic() + heartbeat_s
    while True:
        try:
            item = client.mailbox.take(max(0.0, next_beat - time.monotonic()))
        except _Ended as ended:
            if ended.state == OVERFLOW:
                reason = f"queue of {client.mailbox.size} messages overflowed: client too slow"
                send(protocol.encode(protocol.error(reason)))
                close(1008, "client too slow")
            return
        if item is not None:
            send(item)
            hub.metrics.ws_sent.inc()
        # Checked after every message too, so a busy feed still carries heartbeats.
        if time.monotonic() >= next_beat:
            send(protocol.encode(hub.heartbeat(client)))
            next_beat = time.monotonic() + heartbeat_s
