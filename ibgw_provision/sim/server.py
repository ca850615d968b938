"""The simulated gateway: listener, client registry, market clock, and the fault controls."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from ..tws.codes import Code
from . import handlers
from .broker import Broker
from .config import MAX_CLIENTS, MIN_VERSION, SimConfig
from .market import NEW_YORK, Market
from .session import CLOSE_TIMEOUT, Session
from .universe import Universe

log = logging.getLogger("ibgw.sim")

FARM_NOTICES = (
    (Code.MARKET_DATA_FARM_OK, "Market data farm connection is OK:usfarm"),
    (Code.HISTORICAL_DATA_FARM_OK, "HMDS data farm connection is OK:ushmds"),
    (Code.SEC_DEF_FARM_OK, "Sec-def data farm connection is OK:secdefnj"),
)
REOPEN_RETRY = 1.0
DUPLICATE_CLIENT_ID = "Unable to connect as the client id is already in use. Retry with a unique client id."


class SimServer:
    min_version = MIN_VERSION

    def __init__(self, config: SimConfig):
        self.config = config
        self.port = config.port
        now = datetime.now(NEW_YORK)
        self.universe = Universe(now.strftime("%Y%m%d"))
        self.market = Market(self.universe, config.seed, now)
        self.broker = Broker(list(config.account_names), config.seed)
        self.sessions: dict[int, Session] = {}  # logged-on clients by client id
        self.connections: set[Session] = set()  # every open socket, logged on or not
        self.latency = 0.0
        self._listener: asyncio.Server | None = None
        self._reopen: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()  # market clock and reopening, cancelled by stop
        self._handlers: set[asyncio.Task] = set()  # one per connection, left to finish by stop
        self._stopped = False

    @property
    def accounts(self) -> tuple[str, ...]:
        return self.config.account_names

    @property
    def restart_downtime(self) -> float:
        return self.config.restart_downtime

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def start(self) -> None:
        await self._listen()
        self._spawn(self._tick_forever())

    async def _listen(self) -> None:
        self._listener = await asyncio.start_server(self._accept, self.config.host, self.port)
        self.port = self._listener.sockets[0].getsockname()[1]
        log.info(
            "listening on %s:%d (%s mode, accounts %s, max version %d)",
            self.config.host,
            self.port,
            self.config.mode,
            ",".join(self.accounts),
            self.config.max_version,
        )

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= MAX_CLIENTS or self._stopped:
            log.warning(
                "refusing %s: %s",
                writer.get_extra_info("peername"),
                "shutting down" if self._stopped else f"{MAX_CLIENTS} clients connected",
            )
            writer.close()
            return
        session, handler = Session(self, reader, writer), asyncio.current_task()
        assert handler is not None  # start_server runs each client in its own task
        self.connections.add(session)
        self._handlers.add(handler)
        try:
            await session.run()
        finally:
            self._handlers.discard(handler)

    def admit(self, session: Session, client_id: int) -> bool:
        """START_API: register the client and greet it, or refuse a duplicate client id (326)."""
        holder = self.sessions.get(client_id)
        if holder is not None and not holder.closed:
            log.warning("client id %d from %s refused: already in use", client_id, session.peer)
            session.send(session.encoder.error(-1, Code.CLIENT_ID_IN_USE, DUPLICATE_CLIENT_ID))
            return False
        session.client_id = client_id
        self.sessions[client_id] = session
        log.info("client %d connected from %s, server version %d", client_id, session.peer, session.version)
        enc = session.encoder
        session.send(
            enc.managed_accounts(self.accounts)
            + enc.next_valid_id(self.broker.next_order_id)
            + b"".join(enc.error(-1, code, text) for code, text in FARM_NOTICES)
        )
        return True

    def forget(self, session: Session) -> None:
        self.connections.discard(session)
        if session.client_id is not None and self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            log.info("client %d disconnected (%s)", session.client_id, session.peer)

    def handle(self, session: Session, msg_id: int, request: object) -> None:
        handlers.handle(self, session, msg_id, request)

    def versions(self) -> tuple[int, int]:
        return self.min_version, self.config.max_version

    def connection_time(self) -> str:
        return datetime.now().astimezone().strftime("%Y%m%d %H:%M:%S %Z")

    def lines_in_use(self) -> int:
        return sum(len(s.market_data) for s in self.sessions.values())

    # ---- market clock ----------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        loop, interval = asyncio.get_running_loop(), self.config.tick_interval
        due = loop.time()
        while True:
            due = max(due + interval, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                self.market.step(interval)
                handlers.market_step(self)
            except Exception:  # keep the market running whatever one step hit
                log.exception("market step failed")

    # ---- fault controls --------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        self.latency = max(0.0, seconds)
        log.warning("latency set to %.0f ms", self.latency * 1000)

    async def restart(self, downtime: float) -> None:
        """Like IB Gateway's daily restart: drop every client, refuse connections for `downtime` seconds."""
        if self._stopped:
            return
        self._stop_listening()
        if self._reopen is not None:  # a restart during a restart: only the last one reopens
            self._reopen.cancel()
        self._reopen = self._spawn(self._reopen_after(downtime))
        log.warning("daily restart: dropping %d clients, down for %gs", len(self.connections), downtime)
        await self._drop_all()

    async def _reopen_after(self, downtime: float) -> None:
        await asyncio.sleep(downtime)
        while True:
            try:
                await self._listen()
                return
            except OSError as exc:  # e.g. another process took the port meanwhile
                log.error("cannot listen again on %s:%d: %s; retrying", self.config.host, self.port, exc)
                await asyncio.sleep(REOPEN_RETRY)

    async def _drop_all(self) -> None:
        await asyncio.gather(*(s.close() for s in list(self.connections)))

    async def stop(self) -> None:
        """Clean shutdown: stop listening and ticking, flush and close every client."""
        self._stopped = True
        self._stop_listening()
        for task in list(self._tasks):
            task.cancel()
        await self._drop_all()
        if self._handlers:  # closed sockets end them; asyncio in 3.11 logs handlers it has to cancel
            await asyncio.wait(self._handlers, timeout=CLOSE_TIMEOUT)
        log.info("stopped")
