"""WebSocket clients and fan-out: each message is framed once and written without ever blocking.

The consumer thread hands each new bar or alert to `Hub.publish_*`. The hub
builds the WebSocket frame once and, for every subscribed client, writes it
straight to the socket with a non-blocking send when that client has nothing
pending; otherwise the frame joins the client's bounded mailbox, which the
client's own thread drains with blocking writes. A client whose mailbox is
full is cut off (error, then close 1008) instead of slowing the others.

Writing directly from the fan-out thread matters: waking one thread per
client per message costs ~0.3 ms of CPU each under the GIL, which capped a
2-core machine at a few hundred clients.
"""
from __future__ import annotations

import itertools
import logging
import socket
import struct
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


def text_frame(text: str) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class Mailbox:
    """The write side of one socket: direct non-blocking writes, else a bounded FIFO of frames.

    `busy` is set while some thread writes to the socket, so frames never
    interleave; `partial` is the unsent tail of a frame, which must go out
    before anything else (even the close after an overflow).
    """

    def __init__(self, size: int, sock: socket.socket | None) -> None:
        self.size = max(1, size)
        self.sock = sock
        self._items: deque[bytes] = deque()
        self._cond = threading.Condition(threading.Lock())
        self.busy = False
        self.partial: bytes | None = None
        self.state: str | None = None   # None while open, else CLOSED or OVERFLOW
        self.queued = 0                 # frames that could not be written at once

    def offer(self, frame: bytes) -> bool:
        """Write or queue `frame` without blocking; False if the mailbox is full or no longer open."""
        with self._cond:
            if self.state is not None:
                return False
            if self.busy or self._items or self.partial is not None or self.sock is None:
                if len(self._items) >= self.size:
                    return False
                self._items.append(frame)
                self.queued += 1
                self._cond.notify()
                return True
            self.busy = True
        sent = 0
        try:
            sent = self.sock.send(frame, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # The peer is gone; its reader thread will notice and disconnect it.
            sent = len(frame)
        with self._cond:
            self.busy = False
            if sent < len(frame):
                self.queued += 1
                self.partial = frame[sent:] if sent else None
                if not sent:
                    self._items.appendleft(frame)
            self._cond.notify()
        return True

    def end(self, state: str) -> None:
        """Stop the mailbox: CLOSED and OVERFLOW drop the backlog (a partial frame is kept)."""
        with self._cond:
            if self.state is None:
                self.state = state
            self._items.clear()
            self._cond.notify_all()

    def take(self, timeout: float) -> bytes | None:
        """Claim the next frame to write (call `done` after writing it), or None after `timeout` s.

        Raises _Ended once the mailbox is stopped and no partial frame remains.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if not self.busy:
                    if self.partial is not None:
                        item, self.partial = self.partial, None
                        self.busy = True
                        return item
                    if self.state is not None:
                        raise _Ended(self.state)
                    if self._items:
                        self.busy = True
                        return self._items.popleft()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def done(self) -> None:
        """Release the socket after a `take`."""
        with self._cond:
            self.busy = False
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class _Ended(Exception):
    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class Client:
    """One WebSocket connection's subscriptions and mailbox."""

    _ids = itertools.count(1)

    def __init__(self, queue_size: int, sock: socket.socket | None) -> None:
        self.id = next(self._ids)
        self.mailbox = Mailbox(queue_size, sock)
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
        # Orders store updates, fan-out and subscriptions. It is not the store's
        # lock, so REST reads never wait for a fan-out to a thousand sockets.
        self._lock = threading.RLock()

    # --- clients -----------------------------------------------------------
    def connect(self, sock: socket.socket | None = None) -> Client:
        """Register a new client writing to `sock` (None: everything goes through its mailbox)."""
        client = Client(self.queue_size, sock)
        with self._lock:
            self._clients[client.id] = client
            self.metrics.ws_clients.set(len(self._clients))
        return client

    def disconnect(self, client: Client) -> None:
        """Forget `client` (idempotent)."""
        client.mailbox.end(CLOSED)
        with self._lock:
            self._clients.pop(client.id, None)
            self.metrics.ws_clients.set(len(self._clients))

    def client_count(self) -> int:
        """Number of connected clients."""
        return len(self._clients)

    def send(self, client: Client, message: dict[str, Any]) -> None:
        """Queue one message for `client` (replies, welcome); overflow closes it like any other."""
        with self._lock:
            self._offer(client, text_frame(protocol.encode(message)))

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
        # Under the hub lock no bar is applied or fanned out, so the snapshot
        # and the live messages after it neither overlap nor leave a gap.
        with self._lock:
            client.subscriptions[channel].add(symbols)
            subscribed = {"type": "subscribed", "channel": channel, "symbols": symbols}
            if not self._offer(client, text_frame(protocol.encode(subscribed))):
                return
            wanted = None if protocol.ALL_SYMBOLS in symbols else set(symbols)
            if channel == protocol.CHANNEL_TRENDS:
                data: list[dict[str, Any]] = self.store.latest(wanted)
            else:
                data = self.store.alerts(limit=protocol.ALERT_SNAPSHOT_SIZE, symbols=wanted)
            snapshot = {"type": "snapshot", "channel": channel, "data": data}
            self._offer(client, text_frame(protocol.encode(snapshot)))

    def unsubscribe(self, client: Client, channel: str, symbols: list[str]) -> None:
        """Remove a subscription and confirm it."""
        with self._lock:
            client.subscriptions[channel].remove(symbols)
            message = {"type": "unsubscribed", "channel": channel, "symbols": symbols}
            self._offer(client, text_frame(protocol.encode(message)))

    # --- fan-out (consumer thread) -----------------------------------------
    def publish_bar(self, bar: Bar) -> bool:
        """Store `bar`; if it is a new version, push it to subscribers. True if it was new."""
        bar_identity(bar)
        return self.publish_many([(protocol.CHANNEL_TRENDS, bar)]) == 1

    def publish_alert(self, alert: Alert) -> bool:
        """Store `alert`; if its id is new, push it to subscribers. True if it was new."""
        alert_identity(alert)
        return self.publish_many([(protocol.CHANNEL_ALERTS, alert)]) == 1

    def publish_many(self, records: list[tuple[str, dict[str, Any]]]) -> int:
        """Store a batch of (channel, record) in order and push the new ones; the number that were new.

        Records must have passed bar_identity / alert_identity. A client gets
        all of the batch it wants in one write: when the pipeline fires the
        panes of every symbol at once, that is one send per client, not one
        per bar and client.
        """
        with self._lock:
            fresh: list[tuple[str, str, bytes]] = []
            for channel, record in records:
                if channel == protocol.CHANNEL_TRENDS:
                    symbol = bar_identity(record)[0]
                    if self.store.apply_bar(record):
                        fresh.append((channel, symbol, text_frame(protocol.encode({"type": "trend",
                                                                                   "data": record}))))
                else:
                    symbol = alert_identity(record)[1]
                    if self.store.apply_alert(record):
                        fresh.append((channel, symbol, text_frame(protocol.encode({"type": "alert",
                                                                                   "data": record}))))
            if fresh:
                self._fan_out(fresh)
            return len(fresh)

    def _fan_out(self, fresh: list[tuple[str, str, bytes]]) -> None:
        started = time.perf_counter()
        sent = queued = 0
        for client in list(self._clients.values()):
            if len(fresh) == 1:
                channel, symbol, frame = fresh[0]
                parts = [frame] if client.wants(channel, symbol) else []
            else:
                parts = [frame for channel, symbol, frame in fresh if client.wants(channel, symbol)]
            if parts:
                before = client.mailbox.queued
                if self._offer(client, parts[0] if len(parts) == 1 else b"".join(parts)):
                    sent += len(parts)
                queued += client.mailbox.queued - before
        if sent:
            self.metrics.ws_sent.inc(sent)
        if queued:
            self.metrics.ws_queued.inc(queued)
        self.metrics.fanout.observe(time.perf_counter() - started)

    def _offer(self, client: Client, frame: bytes) -> bool:
        if client.mailbox.offer(frame):
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
        # A client that reads nothing never takes its close frame; its
        # thread would block in sendall() for good without this cut.
        timer = threading.Timer(self.close_grace_s, cut_socket(client.mailbox.sock))
        timer.daemon = True
        timer.start()

    def heartbeat(self, client: Client) -> None:
        """Queue the next heartbeat of `client` (a full queue closes it like any other message)."""
        client.heartbeat_seq += 1
        self.send(client, {"type": "heartbeat", "seq": client.heartbeat_seq})


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


def pump(hub: Hub, client: Client, write: Callable[[bytes], None], close: Callable[[int, str], None],
         heartbeat_s: float) -> None:
    """Drain `client`'s mailbox onto its socket until it closes; heartbeats; error + 1008 on overflow."""
    mailbox = client.mailbox
    next_beat = time.monotonic() + heartbeat_s
    while True:
        try:
            frame = mailbox.take(max(0.0, next_beat - time.monotonic()))
        except _Ended as ended:
            if ended.state == OVERFLOW:
                reason = f"queue of {mailbox.size} messages overflowed: client too slow"
                write(text_frame(protocol.encode(protocol.error(reason))))
                close(1008, "client too slow")
            return
        if frame is not None:
            try:
                write(frame)
            finally:
                mailbox.done()
        # Checked after every frame too, so a busy feed still carries heartbeats.
        if time.monotonic() >= next_beat:
            hub.heartbeat(client)
            next_beat = time.monotonic() + heartbeat_s
