"""The gate: its listener, the apps' live state, the kill switch, and its admin and metrics endpoints."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass

from . import admin, metrics
from .audit import AuditLog
from .config import GateConfig
from .link import Link
from .orders import OrderRequest
from .relay import Connection

log = logging.getLogger("ibgw.gate")
STOP_TIMEOUT = 10.0


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


class Gate:
    def __init__(self, config: GateConfig):
        self.config = config
        self.audit = AuditLog(config.audit_db)
        self.halted = self.audit.halted()
        self.stats = {app.name: AppStats() for app in config.apps}
        self.connected: dict[int, Connection] = {}  # admitted connections by client id
        self.refused_connections = 0
        self.port = config.listen.port
        self.metrics_port = config.metrics.port if config.metrics else None
        self._tasks: dict[Connection, asyncio.Task] = {}
        self._servers: list[asyncio.Server] = []
        self._admin: asyncio.Server | None = None

    async def start(self) -> None:
        """Admin socket first (it fails if this gate already runs), then the listener and metrics."""
        listen, loop = self.config.listen, asyncio.get_running_loop()
        self._admin = await admin.serve(self, self.config.admin_socket)
        self._servers.append(self._admin)
        self.audit.end_orphans()
        listener = await loop.create_server(lambda: Link(self._accept, self.config.max_frame + 4),
                                            listen.host, listen.port)
        self._servers.append(listener)
        self.port = listener.sockets[0].getsockname()[1]
        if self.config.metrics is not None:
            endpoint = await metrics.serve(self, self.config.metrics.host, self.config.metrics.port)
            self._servers.append(endpoint)
            self.metrics_port = endpoint.sockets[0].getsockname()[1]
        log.info("%s gate listening on %s:%d for %s, %d apps%s, trading %s (%s event loop)", self.config.mode,
                 listen.host, self.port, self.config.upstream, len(self.config.apps),
                 ", PROXY protocol" if self.config.proxy_protocol else "", "HALTED" if self.halted else "open",
                 type(loop).__module__.split(".")[0])

    def _accept(self, link: Link) -> None:
        if link.transport.get_extra_info("peername") is None:  # gone before we saw it (a TCP check)
            link.transport.close()
            return
        connection = Connection(self, link)
        task = asyncio.create_task(connection.run())
        self._tasks[connection] = task
        task.add_done_callback(lambda _: self._tasks.pop(connection, None))

    def disconnected(self, connection: Connection) -> None:
        if self.connected.get(connection.client_id) is connection:
            del self.connected[connection.client_id]
            self.stats[connection.app.name].connected = False

    async def record_order(self, connection: Connection, order: OrderRequest, reason: str | None) -> None:
        """Commit the order request and the decision on it to the audit log."""
        await self.audit.order(connection.audit_id, connection.app.name, connection.client_id, order, reason)
        stats = self.stats[connection.app.name]
        if reason is None:
            stats.orders_forwarded += 1
        else:
            stats.orders_refused += 1

    async def set_halted(self, halted: bool, by: str) -> None:
        """The kill switch: while on, new orders are refused. Persisted before this returns."""
        self.halted = halted
        await self.audit.set_halted(halted)
        log.warning("kill switch %s by %s: %s", "ON" if halted else "OFF", by,
                    "new orders are refused" if halted else "orders pass again")

    def status(self) -> dict:
        apps = [{"name": app.name, "client_id": app.client_id, "read_only": app.read_only,
                 **asdict(self.stats[app.name])} for app in self.config.apps]
        return {"mode": self.config.mode, "listen": f"{self.config.listen.host}:{self.port}",
                "upstream": str(self.config.upstream), "halted": self.halted,
                "connections": len(self._tasks), "refused_connections": self.refused_connections, "apps": apps}

    async def stop(self) -> None:
        """Stop listening, end every connection (recording why), close the audit log."""
        for server in self._servers:
            server.close()
        for connection in list(self._tasks):
            connection.stop("gate stopped")
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=STOP_TIMEOUT)
        if self._admin is not None:
            admin.remove(self.config.admin_socket)
        self.audit.close()
        log.info("stopped")
