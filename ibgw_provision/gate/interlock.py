"""The paper/live interlock: a gate refuses every app once its gateway reports accounts of the other mode.

Paper accounts start with D (DU..., DF...); live ones do not. A paper gate trips when any account is
not a paper one; a live gate when every account is. The gate checks the accounts the gateway sends
at each logon (managedAccounts), and at start-up through a probe logon with the reserved probe
client id. Once tripped it stays tripped until the gate restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..tws.probe import ProbeError, probe
from .state import GateState

log = logging.getLogger("ibgw.gate")
PROBE_TIMEOUT = 10.0


def mismatch(mode: str, accounts: Iterable[str]) -> str | None:
    """Why `accounts` cannot be behind a `mode` gateway, or None when they fit."""
    accounts = [a for a in accounts if a]
    if not accounts:
        return f"the {mode} gateway reported no account"
    paper = [a.upper().startswith("D") for a in accounts]
    if mode == "paper" and not all(paper):
        live = [a for a, p in zip(accounts, paper, strict=True) if not p]
        return f"the paper gateway reports live account(s) {', '.join(live)}"
    if mode == "live" and all(paper):
        return f"the live gateway reports only paper account(s) {', '.join(accounts)}"
    return None


def trip(gate: GateState, reason: str) -> None:
    """Refuse every app from now on and end every connection."""
    if gate.interlock is None:
        gate.interlock = reason
        log.warning("paper/live interlock tripped: %s; every app is refused until the gate restarts", reason)
    for connection in list(gate.connected.values()):
        end = getattr(connection, "end", None)
        if end is not None:
            end(f"paper/live interlock: {reason}")


async def probe_at_start(gate: GateState) -> None:
    """Log on to the gateway once with the probe client id and check its accounts."""
    client_id, upstream = gate.config.probe_client_id, gate.config.upstream
    if client_id is None:
        return
    try:
        result = await probe(upstream.host, upstream.port, client_id, timeout=PROBE_TIMEOUT)
    except (ProbeError, OSError, TimeoutError) as exc:
        log.warning("start-up probe of %s failed (%s); accounts are checked at each logon", upstream, exc)
        return
    reason = mismatch(gate.config.mode, result.accounts)
    if reason is not None:
        trip(gate, reason)
    else:
        log.info("start-up probe: %s gateway accounts %s", gate.config.mode, ", ".join(result.accounts))
