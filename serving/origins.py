"""Which web pages may open the WebSocket: the Origin allow-list (setting WS_ALLOWED_ORIGINS).

A browser sends the Origin of the page that opens a WebSocket and lets any
page open one to any host; without this check any web site a user visits
could read the feed through the user's browser (cross-site WebSocket hijacking).
"""
from __future__ import annotations

from urllib.parse import urlsplit

SELF = "self"            # the origin names the host the request was sent to
LOCALHOST = "localhost"  # any port of localhost, 127.0.0.1 or [::1]: development
ANY = "*"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed(origin: str, host: str, allow_list: str) -> bool:
    """True if a page of `origin` may open /ws on a request whose Host header is `host`."""
    entries = {e.strip().lower().rstrip("/") for e in allow_list.split(",") if e.strip()}
    origin = origin.strip().lower()
    if ANY in entries or origin in entries:
        return True
    try:
        parts = urlsplit(origin)
        hostname, netloc = parts.hostname, parts.netloc
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not hostname:
        return False   # "null" (sandboxed frames, files) and other schemes
    if SELF in entries and netloc == host.strip().lower():
        return True
    return LOCALHOST in entries and hostname in LOCAL_HOSTS
