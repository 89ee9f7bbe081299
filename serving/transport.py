"""WebSocket transport: RFC 6455 frames, per-socket mailboxes and the one write token of a socket.

A frame is built once (`text_frame`) and written straight to the socket
with a non-blocking send when nothing is pending for that socket; otherwise
it joins the socket's `Mailbox`, bounded in bytes, which the client's own
thread drains (`pump`) with blocking writes. Every frame of a socket,
simple-websocket's pings and close replies included (`SharedSocket`), is
written by whoever holds that socket's one write token, so frames never
interleave on the wire.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from typing import Any, Callable

from serving import protocol

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

    def wait_below(self, max_pending: int, timeout: float) -> bool:
        """Wait until at most `max_pending` bytes are waiting, or the mailbox is shut; False after `timeout` s.

        For a writer that can wait (a replay) instead of overflowing the bound.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.state is None and self.pending_bytes > max_pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def detach(self) -> None:
        """The writer thread is gone: nobody will finish a partial frame any more."""
        with self._cond:
            self.detached = True
            self._cond.notify_all()

    def take(self, timeout: float) -> bytes | None:
        """Claim the next frame to write (call `done` after writing it), or None after `timeout` s.

        Raises Ended once the mailbox is stopped and no partial frame remains.
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
                        raise Ended(self.state)
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
    frame the hub is writing.
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


class Ended(Exception):
    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state



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


def pump(mailbox: Mailbox, write: Callable[[bytes], None], close: Callable[[int, str], None],
         heartbeat: Callable[[], None], heartbeat_s: float, close_grace_s: float) -> None:
    """Drain `client`'s mailbox onto its socket until it closes; heartbeats; error + close code on eviction."""
    next_beat = time.monotonic() + heartbeat_s
    try:
        while True:
            try:
                frame = mailbox.take(max(0.0, next_beat - time.monotonic()))
            except Ended as ended:
                if ended.state == EVICTED:
                    reason = mailbox.close_reason
                    mailbox.write_exclusive(text_frame(protocol.encode(protocol.error(reason))),
                                            close_grace_s)
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
                heartbeat()
                next_beat = time.monotonic() + heartbeat_s
    finally:
        mailbox.detach()
