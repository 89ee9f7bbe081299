"""WebSocket clients and fan-out: each message is framed once and written without ever blocking.

The consumer thread hands each new bar or alert to `Hub.publish_*`. The hub
builds the WebSocket frame once and, for every subscribed client, writes it
straight to the socket with a non-blocking send when that client has nothing
pending; otherwise the frame joins the client's mailbox, bounded in bytes,
which the client's own thread drains with blocking writes. A client whose
mailbox is full is cut off (error, then close 1008) instead of slowing the
others. Every frame of a socket, simple-websocket's pings and close replies
included, is written by whoever holds that socket's one write token.

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
from dataclasses import dataclass
from typing import Any, Callable

from market import codec
from serving import protocol
from serving.metrics import Metrics
from serving.records import check_alert, check_bar
from serving.store import Alert, Bar, MarketStore

log = logging.getLogger(__name__)

CLOSED = "closed"
EVICTED = "evicted"     # overflow or rate limit: an error message, then a close with a code


def text_frame(text: str | bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2), as a server sends it (`text` str or UTF-8)."""
    payload = text.encode() if isinstance(text, str) else text
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class Mailbox:
    """The write side of one socket: direct non-blocking writes, else a FIFO bounded in bytes.

    `busy` is the socket's one write token: every write of a frame, ours or
    simple-websocket's own pings, pongs and close replies (through
    `SharedSocket`), holds it, so frames never interleave on the wire.
    `partial` is the unsent tail of a frame, which must go out before anything
    else (even a control frame or the close after an overflow).
    """

    def __init__(self, max_bytes: int, sock: socket.socket | None) -> None:
        self.max_bytes = max(1, max_bytes)
        self.sock = sock
        self._items: deque[bytes] = deque()
        self._cond = threading.Condition(threading.Lock())
        self.busy = False
        self.partial: bytes | None = None
        self.pending_bytes = 0          # bytes waiting: queued frames and the partial tail
        # Bytes of one frame larger than the bound (a snapshot of 10,000 symbols
        # is ~6 MB) not taken yet: not counted against the bound, or every
        # message after it would overflow. One such frame at a time.
        self.grace = 0
        self.state: str | None = None   # None while open, else CLOSED or EVICTED
        self.close_code = 1000
        self.close_reason = ""
        self.detached = False           # the socket's writer thread is gone
        self.exclusive_waiting = 0      # control frames waiting: they go before the next queued frame
        self.queued = 0                 # frames that could not be written at once

    def offer(self, frame: bytes) -> bool:
        """Write or queue `frame` without blocking; False if it would overflow the bound or the mailbox is shut.

        A frame always fits into an empty mailbox, so one large snapshot never
        evicts a client by itself; what is bounded is the backlog.
        """
        with self._cond:
            if self.state is not None:
                return False
            if (self.busy or self._items or self.partial is not None or self.exclusive_waiting
                    or self.sock is None):
                counted = self.pending_bytes - self.grace
                if len(frame) > self.max_bytes:
                    if self.grace or counted > self.max_bytes:
                        return False        # a second huge frame behind the first: not keeping up
                    self.grace = len(frame)
                elif counted and counted + len(frame) > self.max_bytes:
                    return False
                self._items.append(frame)
                self.pending_bytes += len(frame)
                self.queued += 1
                self._cond.notify_all()
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
                if len(frame) - sent > self.max_bytes and not self.grace:
                    self.grace = len(frame) - sent
                if sent:
                    self.partial = frame[sent:]
                else:
                    self._items.appendleft(frame)
                self.pending_bytes += len(frame) - sent
            self._cond.notify_all()
        return True

    def write_exclusive(self, data: bytes, timeout: float | None = None) -> None:
        """Write `data` (whole frames) with a blocking send once no other frame is on its way.

        simple-websocket's pings, pongs and close replies and our final error
        frame come this way. After `timeout` seconds, or once the writer
        thread is gone with half a frame unsent, `data` is dropped: the
        connection is ending and a frame after a cut one would be garbage.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            # While we wait, nobody starts another frame (a ping behind a
            # backlog of megabytes would miss its pong deadline).
            self.exclusive_waiting += 1
            try:
                while self.busy or self.partial is not None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if self.detached or (remaining is not None and remaining <= 0):
                        return
                    self._cond.wait(remaining)
            finally:
                self.exclusive_waiting -= 1
            self.busy = True
        try:
            if self.sock is not None:
                self.sock.sendall(data)
        finally:
            self.done()

    def end(self, state: str, code: int = 1000, reason: str = "") -> None:
        """Stop the mailbox: the backlog is dropped (a partial frame is kept); the first state wins."""
        with self._cond:
            if self.state is None:
                self.state, self.close_code, self.close_reason = state, code, reason
            self._items.clear()
            self.pending_bytes = len(self.partial) if self.partial is not None else 0
            self.grace = 0
            self._cond.notify_all()

    def detach(self) -> None:
        """The writer thread is gone: nobody will finish a partial frame any more."""
        with self._cond:
            self.detached = True
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
                        self.pending_bytes -= len(item)
                        self.grace = max(0, self.grace - len(item))
                        return item
                    if self.state is not None:
                        raise _Ended(self.state)
                    if self._items and not self.exclusive_waiting:
                        self.busy = True
                        item = self._items.popleft()
                        self.pending_bytes -= len(item)
                        self.grace = max(0, self.grace - len(item))
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def done(self) -> None:
        """Release the socket after a `take` or an exclusive write."""
        with self._cond:
            self.busy = False
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class SharedSocket:
    """The socket as simple-websocket sees it: reads go straight through, writes take the mailbox's token.

    simple-websocket writes pings, pong replies and close frames from its own
    thread with `sock.send`; without this they could land in the middle of a
    frame the hub is writing (issue 13).
    """

    def __init__(self, sock: socket.socket, mailbox: Mailbox, write_timeout: float) -> None:
        self._sock = sock
        self._mailbox = mailbox
        self._write_timeout = write_timeout

    def send(self, data: bytes, flags: int = 0) -> int:
        self._mailbox.write_exclusive(bytes(data), self._write_timeout)
        return len(data)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self._mailbox.write_exclusive(bytes(data), self._write_timeout)

    def __getattr__(self, name: str) -> Any:
        # recv, fileno, close, shutdown ...: the real socket's.
        return getattr(self._sock, name)


class _Ended(Exception):
    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


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

    def wants(self, channel: str, symbol: str) -> bool:
        """True if this client subscribed to `symbol` on `channel`."""
        return self.subscriptions[channel].matches(symbol)


class Hub:
    """The registry of connected clients and the fan-out of bars and alerts."""

    def __init__(self, store: MarketStore, metrics: Metrics, limits: Limits | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.limits = limits or Limits()
        self._clients: dict[int, Client] = {}
        # The subscription index: per channel, the clients subscribed to "*"
        # and, per named symbol, the clients that named it. A message costs
        # the clients that want it, not a scan of every client (issue 18).
        self._everyone: dict[str, dict[int, Client]] = {ch: {} for ch in protocol.CHANNELS}
        self._named: dict[str, dict[str, dict[int, Client]]] = {ch: {} for ch in protocol.CHANNELS}
        # Orders store updates, fan-out and subscriptions. It is not the store's
        # lock, so REST reads never wait for a fan-out to a thousand sockets.
        self._lock = threading.RLock()

    def _reindex(self, client: Client, channel: str, drop: bool = False) -> None:
        """Bring the index in line with `client`'s subscription of `channel` (or take it out: `drop`)."""
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
        with self._lock:
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
        with self._lock:
            self._clients.pop(client.id, None)
            self._forget(client)
            self.metrics.ws_clients.set(len(self._clients))

    def client_count(self) -> int:
        """Number of connected clients."""
        return len(self._clients)

    def send(self, client: Client, message: dict[str, Any]) -> None:
        """Queue one message for `client` (replies, welcome); overflow closes it like any other."""
        with self._lock:
            self._send(client, message)

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
            self.subscribe(client, action.channel or "", list(action.symbols))
        else:
            self.unsubscribe(client, action.channel or "", list(action.symbols))

    def subscribe(self, client: Client, channel: str, symbols: list[str]) -> None:
        """Add a subscription, then queue `subscribed` and the channel's snapshot atomically with the stream."""
        # Under the hub lock no bar is applied or fanned out, so the snapshot
        # and the live messages after it neither overlap nor leave a gap.
        with self._lock:
            subscription = client.subscriptions[channel]
            if subscription.named_after_add(symbols) > self.limits.max_symbols:
                self._send(client, protocol.error(
                    f"at most {self.limits.max_symbols} symbols per channel; subscribe to \"*\" for all"))
                return
            subscription.add(symbols)
            if client.id in self._clients:
                self._reindex(client, channel)
            subscribed = {"type": "subscribed", "channel": channel, "symbols": symbols}
            if not self._send(client, subscribed):
                return
            wanted = None if protocol.ALL_SYMBOLS in symbols else set(symbols)
            if channel == protocol.CHANNEL_TRENDS:
                # The latest bars as kept encoded: 10,000 symbols cost a join, not 10,000 encodings.
                parts = self.store.board.encoded(wanted)
                self._offer(client, text_frame(b'{"type":"snapshot","channel":"trends","data":['
                                               + b",".join(parts) + b"]}"))
                return
            data = self.store.alerts(limit=protocol.ALERT_SNAPSHOT_SIZE, symbols=wanted)
            snapshot = {"type": "snapshot", "channel": channel, "data": data}
            self._send(client, snapshot)

    def unsubscribe(self, client: Client, channel: str, symbols: list[str]) -> None:
        """Remove a subscription and confirm it."""
        with self._lock:
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
    def publish_bar(self, bar: Bar) -> bool:
        """Check, store and push `bar` if it is a new version; True if it was new. Raises MalformedRecord."""
        return self.publish_many([(protocol.CHANNEL_TRENDS, check_bar(bar))]) == 1

    def publish_alert(self, alert: Alert) -> bool:
        """Check, store and push `alert` if its id is new; True if it was new. Raises MalformedRecord."""
        return self.publish_many([(protocol.CHANNEL_ALERTS, check_alert(alert))]) == 1

    def publish_many(self, records: list[tuple[str, dict[str, Any]]],
                     on_error: Callable[[int, Exception], None] | None = None) -> int:
        """Store a batch of (channel, record) in order and push the new ones; the number that were new.

        Records must have passed serving.records' checks. One that still
        fails (it cannot be encoded, say) is skipped and reported to
        `on_error(index, exc)` (logged if None): the rest of the batch is
        applied. A client gets all of the batch it wants in one write: when
        the pipeline fires the panes of every symbol at once, that is one send
        per client, not one per bar and client.
        """
        with self._lock:
            fresh: list[tuple[str, str, bytes]] = []
            for index, (channel, record) in enumerate(records):
                try:
                    # Encoded before it is stored: a record that cannot be
                    # encoded must never reach the store that REST reads.
                    # Once per record: the same bytes make the frame and, for a
                    # bar, what REST and snapshots serve as its symbol's latest.
                    data = codec.dumps(record)
                    if channel == protocol.CHANNEL_TRENDS:
                        frame = text_frame(b'{"type":"trend","data":' + data + b"}")
                        kept = self.store.apply_bar(record, data)
                    else:
                        frame = text_frame(b'{"type":"alert","data":' + data + b"}")
                        kept = self.store.apply_alert(record)
                    symbol = record["symbol"].upper()
                except Exception as exc:  # one record, whatever is wrong with it, must not stop the batch
                    if on_error is None:
                        log.warning("skipping %s record: %s", channel, exc)
                    else:
                        on_error(index, exc)
                    continue
                if kept:
                    fresh.append((channel, symbol, frame))
            if fresh:
                self._fan_out(fresh)
            return len(fresh)

    def _fan_out(self, fresh: list[tuple[str, str, bytes]]) -> None:
        started = time.perf_counter()
        sent = queued = 0
        wanted: dict[int, tuple[Client, list[bytes]]] = {}
        for channel, symbol, frame in fresh:
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
        everything: bytes | None = None     # the whole batch, joined once for every client that wants it all
        for client, parts in wanted.values():
            if len(parts) == 1:
                buffer = parts[0]
            elif len(parts) == len(fresh):
                if everything is None:
                    everything = b"".join(frame for _, _, frame in fresh)
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
        with self._lock:
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
    """Drain `client`'s mailbox onto its socket until it closes; heartbeats; error + close code on eviction."""
    mailbox = client.mailbox
    next_beat = time.monotonic() + heartbeat_s
    try:
        while True:
            try:
                frame = mailbox.take(max(0.0, next_beat - time.monotonic()))
            except _Ended as ended:
                if ended.state == EVICTED:
                    reason = mailbox.close_reason
                    mailbox.write_exclusive(text_frame(protocol.encode(protocol.error(reason))),
                                            hub.limits.close_grace_s)
                    # The close reason travels in a control frame: at most 123 bytes.
                    close(mailbox.close_code, reason.encode()[:120].decode(errors="ignore"))
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
    finally:
        mailbox.detach()
