"""The WebSocket feed /ws (DESIGN.md §8): a thin flask-sock handler over serving.hub."""
from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from flask import current_app, request
from flask_sock import ConnectionClosed, Sock
from wsproto.utilities import LocalProtocolError

from serving import protocol
from serving.hub import Client, Hub, pump
from serving.state import state

log = logging.getLogger(__name__)
sock = Sock()


def _subscribe_from_query(hub: Hub, client: Client, args: Any) -> None:
    """`/ws?channel=trends&symbols=AAPL,MSFT` subscribes at connect time (symbols default to *)."""
    channels = args.get("channel")
    if not channels:
        return
    try:
        symbols = protocol.parse_symbols(args.get("symbols", protocol.ALL_SYMBOLS))
        for channel in channels.split(","):
            hub.subscribe(client, protocol.parse_channel(channel.strip()), symbols)
    except protocol.ProtocolError as exc:
        hub.send(client, protocol.error(str(exc)))


def _read(ws: Any, hub: Hub, client: Client) -> None:
    """Reader thread: client messages in, replies into the mailbox."""
    try:
        while True:
            raw = ws.receive()
            if raw is None:
                break
            hub.handle(client, raw)
    except ConnectionClosed:
        pass
    finally:
        hub.disconnect(client)


@sock.route("/ws")
def ws_feed(ws: Any) -> None:
    """Stream trends and alerts to one client per its subscriptions."""
    s = state()
    cfg = current_app.config
    # The raw socket (werkzeug and gunicorn both expose it): the hub writes
    # pre-built frames to it directly, bypassing simple-websocket's per-send framing.
    raw_sock = ws.sock
    if cfg["WS_SEND_BUFFER_BYTES"] > 0:
        # A small kernel buffer makes a slow client show up in its bounded mailbox.
        raw_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg["WS_SEND_BUFFER_BYTES"])
    hub = s.hub
    client = hub.connect(raw_sock)
    try:
        hub.send(client, protocol.welcome(cfg["WS_HEARTBEAT_S"]))
        _subscribe_from_query(hub, client, request.args)
        reader = threading.Thread(target=_read, args=(ws, hub, client), name=f"ws-read-{client.id}", daemon=True)
        reader.start()
        pump(hub, client, raw_sock.sendall, lambda code, reason: ws.close(reason=code, message=reason),
             cfg["WS_HEARTBEAT_S"])
    except (ConnectionClosed, OSError, LocalProtocolError):
        pass  # the client went away mid-send or mid-close
    finally:
        hub.disconnect(client)


def init_app(app: Any) -> None:
    """Attach flask-sock with the configured ping interval and message size limit."""
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": app.config["WS_PING_INTERVAL_S"] or None,
        "max_message_size": app.config["WS_MAX_MESSAGE_BYTES"],
    }
    sock.init_app(app)
