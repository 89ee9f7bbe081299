"""The WebSocket feed /ws (DESIGN.md §8): a thin flask-sock handler over serving.hub."""
from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from flask import Response, current_app, request
from flask_sock import ConnectionClosed, Sock
from wsproto.utilities import LocalProtocolError

from serving import origins, protocol
from serving.errors import error_response
from serving.hub import Client, Hub
from serving.transport import SharedSocket, pump, text_frame
from serving.state import state

log = logging.getLogger(__name__)
sock = Sock()
TRY_AGAIN_LATER = 1013   # RFC 6455 close code registry: the server is overloaded


def _subscribe_from_query(hub: Hub, client: Client, args: Any) -> None:
    """`/ws?channel=trends&symbols=AAPL,MSFT` (optionally `&after=0:41,2:7` or `&since=<epoch ms>`) subscribes
    at connect time, as the same subscribe messages would; a bad query string is an `error` and subscribes
    nothing."""
    try:
        actions = protocol.parse_query(args.to_dict(flat=False))
    except protocol.ProtocolError as exc:
        hub.send(client, protocol.error(f"query string: {exc}"))
        return
    for action in actions:
        hub.subscribe(client, action.channel or "", list(action.symbols), action.resume)


def _read(ws: Any, hub: Hub, client: Client) -> None:
    """Reader thread: client messages in, replies into the mailbox; stops once the client is evicted."""
    try:
        while client.mailbox.state is None:
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
    client = hub.new_client(raw_sock)
    # From here on simple-websocket's own writes (pings, pongs, close replies)
    # take the same write token as the hub's frames.
    ws.sock = SharedSocket(raw_sock, client.mailbox, cfg["WS_CLOSE_GRACE_S"])
    try:
        if not hub.register(client):
            s.metrics.ws_refused.labels("full").inc()
            log.warning("refusing a WebSocket client: %d connections is the limit", hub.limits.max_clients)
            message = f"server full: at most {hub.limits.max_clients} connections, try again later"
            client.mailbox.write_exclusive(text_frame(protocol.encode(protocol.error(message))),
                                           cfg["WS_CLOSE_GRACE_S"])
            ws.close(reason=TRY_AGAIN_LATER, message="server full")
            return
        hub.send(client, protocol.welcome(cfg["WS_HEARTBEAT_S"]))
        _subscribe_from_query(hub, client, request.args)
        reader = threading.Thread(target=_read, args=(ws, hub, client), name=f"ws-read-{client.id}", daemon=True)
        reader.start()
        pump(client.mailbox, raw_sock.sendall, lambda code, reason: ws.close(reason=code, message=reason),
             lambda: hub.heartbeat(client), cfg["WS_HEARTBEAT_S"], hub.limits.close_grace_s)
    except (ConnectionClosed, OSError, LocalProtocolError):
        pass  # the client went away mid-send or mid-close
    finally:
        hub.disconnect(client)
        client.mailbox.detach()


def _check_origin() -> Response | None:
    """Refuse (403, before the upgrade) a browser page whose Origin is not allowed to open /ws."""
    if request.path != "/ws":
        return None
    origin = request.headers.get("Origin")
    allowed = current_app.config["WS_ALLOWED_ORIGINS"]
    if origin is None or origins.allowed(origin, request.host, allowed):
        # No Origin: not a browser, which could send any Origin it likes anyway.
        return None
    state().metrics.ws_refused.labels("origin").inc()
    log.warning("refusing a WebSocket client from origin %.100r", origin)
    return error_response(403, "origin_not_allowed",
                          "this page's origin may not open /ws (see WS_ALLOWED_ORIGINS in docs/serving.md)")


def init_app(app: Any) -> None:
    """Attach flask-sock with the configured ping interval and message size limit, and the Origin check."""
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": app.config["WS_PING_INTERVAL_S"] or None,
        "max_message_size": app.config["WS_MAX_MESSAGE_BYTES"],
    }
    app.before_request(_check_origin)
    sock.init_app(app)
