"""systemd's readiness notification (Type=notify), without libsystemd."""

from __future__ import annotations

import os
import socket


def ready() -> None:
    """Tell systemd the service is ready (its port listens); nothing when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", "\0" + address[1:] if address.startswith("@") else address)
