"""How ibgw shows times and durations to people (recap, health, monitor, apps, gate status).

A leaf: it imports nothing from ibgw, so every layer can use it.
"""

from __future__ import annotations

import time


def ago(epoch: float | None, now: float | None = None) -> str:
    """How long ago `epoch` was: 'never', 'now', '42s ago', '17m ago', '3h ago'."""
    if epoch is None:
        return "never"
    seconds = max(0, int((time.time() if now is None else now) - epoch))
    if seconds < 2:
        return "now"
    if seconds < 120:
        return f"{seconds}s ago"
    return f"{seconds // 60}m ago" if seconds < 7200 else f"{seconds // 3600}h ago"


def uptime(seconds: float | None) -> str:
    """How long something has been up: '-', '05h42m', '3.5d'."""
    if not seconds:
        return "-"
    return time.strftime("%Hh%Mm", time.gmtime(seconds)) if seconds < 86400 else f"{seconds / 86400:.1f}d"


def elapsed(seconds: float) -> str:
    """A run's wall time: '2.3s'."""
    return f"{seconds:.1f}s"
