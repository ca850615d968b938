"""Refused logons from strangers (an unregistered client id, or a source no app may use): counted in memory
and audited as at most one row per source per minute, so no one can grow the audit log (or hold up the
orders' rows behind it) by reconnecting as fast as they can. A registered app's refusals are audited
each time by the relay."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from .audit import AuditLog

WINDOW = 60.0  # seconds: at most one row per source in this long
MAX_SOURCES = 10_000  # sources tallied one by one; beyond, together as OTHERS
OTHERS = "(other sources)"


@dataclass
class Tally:
    written: float  # time.monotonic() of the source's last row
    count: int = 0  # refusals since that row
    last_reason: str = ""
    last_client_id: int = -1


class Strangers:
    def __init__(self, window: float = WINDOW, max_sources: int = MAX_SOURCES):
        self.window, self.max_sources = window, max_sources
        self._tallies: OrderedDict[str, Tally] = OrderedDict()  # oldest row first
        self.refused = 0  # every stranger's refused logon since the gate started

    async def refused_logon(
        self, audit: AuditLog, host: str, peer: str, client_id: int, version: int, reason: str
    ) -> bool:
        """Count a stranger's refused logon from `host`; audit it (True) if the source has had no row
        this window."""
        self.refused += 1
        now = time.monotonic()
        await self._flush(audit, now)
        if host not in self._tallies and len(self._tallies) >= self.max_sources:
            host = OTHERS
        tally = self._tallies.get(host)
        if tally is not None:  # a row within the window: count it only
            tally.count += 1
            tally.last_reason, tally.last_client_id = reason, client_id
            return False
        self._tallies[host] = Tally(now)
        await audit.connection(None, client_id, peer, version, "refused", reason)
        return True

    async def flush_all(self, audit: AuditLog) -> None:
        """At the gate's stop: write every count not yet written."""
        await self._flush(audit, float("inf"))

    async def _flush(self, audit: AuditLog, now: float) -> None:
        """Write the counts of the sources whose window has passed; forget the sources that were quiet."""
        while self._tallies:
            host, tally = next(iter(self._tallies.items()))
            if now - tally.written < self.window:
                return
            del self._tallies[host]
            if tally.count:
                if now != float("inf"):
                    self._tallies[host] = Tally(now)  # this row starts the source's next window
                await audit.connection(None, tally.last_client_id, host, 0, "refused", summary(tally))


def summary(tally: Tally) -> str:
    return (
        f"{tally.count} more refused logons from this source (a client id not registered here, or a source "
        f"no app may use), not recorded one by one; the last: {tally.last_reason}"
    )
