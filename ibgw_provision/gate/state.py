"""What the gate's parts share: its config, audit log, kill switch, per-app counters and who is connected.

The relay, the admin socket and the metrics endpoint get this (or less), never the whole Gate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .audit import AuditLog
from .config import GateConfig
from .orders import OrderRequest
from .risk import AppRisk, ContractBook
from .strangers import Strangers
from .tls import Policy

log = logging.getLogger("ibgw.gate")


@dataclass
class AppStats:
    """One app's live state; counters run from the gate's start."""

    connected: bool = False
    source: str | None = None
    last_seen: float | None = None  # epoch seconds of its last message, or of its connecting
    messages_in: int = 0  # from the app to the gateway
    messages_out: int = 0  # from the gateway to the app
    orders_forwarded: int = 0
    orders_refused: int = 0

    def connect(self, source: str) -> None:
        self.connected, self.source, self.last_seen = True, source, time.time()


@dataclass
class GateState:
    config: GateConfig
    audit: AuditLog
    halted: bool
    stats: dict[str, AppStats]
    connected: dict[int, object] = field(default_factory=dict)  # admitted connections by client id
    refused_connections: int = 0
    strangers: Strangers = field(default_factory=Strangers)  # their refused logons, audited in summary
    contracts: ContractBook = field(default_factory=ContractBook)  # conIds as the gateway described them
    risk: dict[str, AppRisk] = field(default_factory=dict)  # by app name, made on first use
    interlock: str | None = None  # why the paper/live interlock tripped; every app is refused then
    tls: Policy | None = None  # front.tls: the app CA, CRL and server certificate for new connections

    def app_risk(self, app: str) -> AppRisk:
        risk = self.risk.get(app)
        if risk is None:
            risk = self.risk[app] = AppRisk()
        return risk

    @classmethod
    def open(cls, config: GateConfig) -> GateState:
        audit = AuditLog(config.audit_db)
        stats = {app.name: AppStats() for app in config.apps}
        tls = Policy(config.tls) if config.tls is not None else None
        return cls(config, audit, audit.halted(), stats, tls=tls)

    def disconnected(self, client_id: int | None, app: str, connection: object) -> None:
        if client_id is not None and self.connected.get(client_id) is connection:
            del self.connected[client_id]
            self.stats[app].connected = False

    async def record_order(
        self, audit_id: int, app: str, client_id: int, order: OrderRequest, reason: str | None
    ) -> int:
        """Commit the order request and the decision on it to the audit log; its row id."""
        row = await self.audit.order(audit_id, app, client_id, order, reason)
        stats = self.stats[app]
        if reason is None:
            stats.orders_forwarded += 1
        else:
            stats.orders_refused += 1
        return row

    async def set_halted(self, halted: bool, by: str) -> None:
        """The kill switch: while on, new orders are refused. Persisted before this returns."""
        self.halted = halted
        await self.audit.set_halted(halted)
        log.warning(
            "kill switch %s by %s: %s",
            "ON" if halted else "OFF",
            by,
            "new orders are refused" if halted else "orders pass again",
        )
