"""The gate: its listener, the apps' live state, the kill switch, and its admin and metrics endpoints."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict

from . import admin, metrics
from .config import GateConfig
from .link import Link
from .relay import Connection
from .state import AppStats, GateState

log = logging.getLogger("ibgw.gate")
STOP_TIMEOUT = 10.0


class Gate:
    def __init__(self, config: GateConfig):
        self.config = config
        self.state = GateState.open(config)
        self.audit = self.state.audit
        self.port = config.listen.port
        self.metrics_port = config.metrics.port if config.metrics else None
        self._tasks: dict[Connection, asyncio.Task] = {}
        self._servers: list[asyncio.Server] = []
        self._admin: asyncio.Server | None = None

    @property
    def halted(self) -> bool:
        return self.state.halted

    @property
    def stats(self) -> dict[str, AppStats]:
        return self.state.stats

    @property
    def connected(self) -> dict[int, object]:
        return self.state.connected

    async def start(self) -> None:
        """Admin socket first (it fails if this gate already runs), then the listener and metrics."""
        listen, loop = self.config.listen, asyncio.get_running_loop()
        self._admin = await admin.serve(self, self.config.admin_socket)
        self._servers.append(self._admin)
        self.audit.end_orphans()
        listener = await loop.create_server(
            lambda: Link(self._accept, self.config.max_frame + 4), listen.host, listen.port
        )
        self._servers.append(listener)
        self.port = listener.sockets[0].getsockname()[1]
        if self.config.metrics is not None:
            endpoint = await metrics.serve(self.state, self.config.metrics.host, self.config.metrics.port)
            self._servers.append(endpoint)
            self.metrics_port = endpoint.sockets[0].getsockname()[1]
        log.info(
            "%s gate listening on %s:%d for %s, %d apps%s, trading %s (%s event loop)",
            self.config.mode,
            listen.host,
            self.port,
            self.config.upstream,
            len(self.config.apps),
            ", PROXY protocol" if self.config.proxy_protocol else "",
            "HALTED" if self.halted else "open",
            type(loop).__module__.split(".")[0],
        )

    def _accept(self, link: Link) -> None:
        if link.transport.get_extra_info("peername") is None:  # gone before we saw it (a TCP check)
            link.transport.close()
            return
        connection = Connection(self.state, link)
        task = asyncio.create_task(connection.run())
        self._tasks[connection] = task
        task.add_done_callback(lambda _: self._tasks.pop(connection, None))

    async def set_halted(self, halted: bool, by: str) -> None:
        """The kill switch: while on, new orders are refused. Persisted before this returns."""
        await self.state.set_halted(halted, by)

    def status(self) -> dict:
        apps = [
            {
                "name": app.name,
                "client_id": app.client_id,
                "read_only": app.read_only,
                **asdict(self.stats[app.name]),
            }
            for app in self.config.apps
        ]
        return {
            "mode": self.config.mode,
            "listen": f"{self.config.listen.host}:{self.port}",
            "upstream": str(self.config.upstream),
            "halted": self.halted,
            "connections": len(self._tasks),
            "refused_connections": self.state.refused_connections,
            "apps": apps,
        }

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
