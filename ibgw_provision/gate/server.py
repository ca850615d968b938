"""The gate: its listener, the apps' live state, the kill switch, and its admin and metrics endpoints."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import asdict

from . import admin, interlock, metrics
from .config import GateConfig
from .link import Link
from .lobby import Lobby
from .relay import Connection
from .state import AppStats, GateState

log = logging.getLogger("ibgw.gate")
STOP_TIMEOUT = 10.0
BACKLOG = 1024  # a burst of connections waits in the kernel, not in SYN retries


class Gate:
    def __init__(self, config: GateConfig):
        self.config = config
        self.state = GateState.open(config)
        self.audit = self.state.audit
        self.port = config.listen.port if config.listen else None
        self.lobby = Lobby(config)
        self.metrics_port = config.metrics.port if config.metrics else None
        self._tasks: dict[Connection, asyncio.Task] = {}
        self._servers: list[asyncio.Server] = []
        self._admin: asyncio.Server | None = None
        self._probe: asyncio.Task | None = None

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
        """Admin socket first (it fails if this gate already runs), then the listeners and metrics."""
        loop = asyncio.get_running_loop()
        self._admin = await admin.serve(self, self.config.admin_socket)
        self._servers.append(self._admin)
        self.audit.end_orphans()
        self._probe = asyncio.create_task(interlock.probe_at_start(self.state))  # paper/live check
        self.lobby.gateway.refresh()  # learn the gateway's version now; no gateway yet is no failure
        limit = self.lobby.max_frame + 4  # the most a Link buffers before the app is admitted
        if self.config.listen is not None:
            listen = self.config.listen
            listener = await loop.create_server(
                lambda: Link(lambda link: self._accept(link, False), limit),
                listen.host,
                listen.port,
                backlog=BACKLOG,
            )
            self._servers.append(listener)
            self.port = listener.sockets[0].getsockname()[1]
        if self.config.front_socket is not None:
            self._servers.append(await self._serve_front(limit))
        if self.config.metrics is not None:
            endpoint = await metrics.serve(self.state, self.config.metrics.host, self.config.metrics.port)
            self._servers.append(endpoint)
            self.metrics_port = endpoint.sockets[0].getsockname()[1]
        log.info(
            "%s gate listening on %s for %s, %d apps, trading %s (%s event loop)",
            self.config.mode,
            " and ".join(self._listening()),
            self.config.upstream,
            len(self.config.apps),
            "HALTED" if self.halted else "open",
            type(loop).__module__.split(".")[0],
        )

    def _listening(self) -> list[str]:
        where = []
        if self.config.listen is not None:
            where.append(f"{self.config.listen.host}:{self.port} (TCP, no PROXY header trusted)")
        if self.config.front_socket is not None:
            where.append(f"{self.config.front_socket.path} (the front's, with PROXY headers)")
        if self.state.tls is not None:  # front.tls: on every listener
            where = [f"{w[:-1]}, then TLS with client certificates)" for w in where]
        return where

    async def _serve_front(self, limit: int) -> asyncio.Server:
        """The unix socket the front connects to: owner and the front's group only (0660)."""
        front = self.config.front_socket
        assert front is not None
        if front.path.is_socket():
            front.path.unlink()  # left by a killed gate; the admin socket proved none runs
        old = os.umask(0o117)  # created 0660, never wider even for an instant
        try:
            server = await asyncio.get_running_loop().create_unix_server(
                lambda: Link(lambda link: self._accept(link, True), limit), str(front.path), backlog=BACKLOG
            )
        finally:
            os.umask(old)
        if front.group is not None:
            shutil.chown(front.path, group=front.group)
        os.chmod(front.path, 0o660)
        return server

    def _accept(self, link: Link, front: bool) -> None:
        if not front and link.transport.get_extra_info("peername") is None:  # gone already (a TCP check)
            link.transport.close()
            return
        if self.lobby.bounds.full():  # the total bound, before any work
            self.lobby.bounds.overflow("any source")
            link.transport.abort()
            return
        connection = Connection(self.state, link, self.lobby, front)
        task = asyncio.create_task(connection.run())
        self._tasks[connection] = task
        task.add_done_callback(lambda _: self._tasks.pop(connection, None))

    async def reload_tls(self) -> None:
        """SIGHUP: re-read the TLS files (CA, CRL, server certificate) for new connections."""
        if self.state.tls is not None:
            self.state.tls.reload()

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
            "listen": ", ".join(self._listening()),
            "upstream": str(self.config.upstream),
            "halted": self.halted,
            "interlock": self.state.interlock,
            "connections": len(self._tasks),
            "refused_connections": self.state.refused_connections,
            "unadmitted": self.lobby.bounds.count,
            "unadmitted_closed_over_bound": self.lobby.bounds.refused,
            "apps": apps,
        }

    async def stop(self) -> None:
        """Stop listening, end every connection (recording why), close the audit log."""
        for server in self._servers:
            server.close()
        if self._probe is not None:
            self._probe.cancel()
        for connection in list(self._tasks):
            connection.stop("gate stopped")
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=STOP_TIMEOUT)
        if self._admin is not None:
            admin.remove(self.config.admin_socket)
        if self.config.front_socket is not None and self.config.front_socket.path.is_socket():
            self.config.front_socket.path.unlink()
        try:
            await self.state.strangers.flush_all(self.audit)
        except Exception:
            log.exception("cannot record the strangers' refused logons")
        self.audit.close()
        log.info("stopped")
