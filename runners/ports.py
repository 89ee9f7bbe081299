"""Free TCP ports on this machine, for the processes the project starts side by side."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick). Another process may take it before the caller binds it."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
