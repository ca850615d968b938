"""Before admission: what the gate answers an app itself, and how many unadmitted apps it holds.

An app's bytes reach the gateway only once its START_API is read and admitted. Until then the
gate plays the gateway's part of the handshake: it answers the app's version hello with the
highest version both the app and the gateway speak, and a connection time in the gateway's
own format. So it must know the gateway's highest version: it asks the gateway with a hello
of its own at start-up (and whenever the answer is unknown or a minute old, one question at a
time), and lowers it when an admitted connection finds the gateway answering less.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import time
from datetime import datetime, timedelta, timezone

from ..tws import versions
from ..tws.errors import HandshakeError, ProtocolError
from ..tws.framing import MAX_HELLO, Hello, parse_server_hello, read_frame
from .config import GateConfig, IPAddress
from .link import Link

if sys.version_info >= (3, 11):
    from asyncio import timeout as aio_timeout
else:  # Python 3.10 (Ubuntu 22.04's): the same context manager from async-timeout
    from async_timeout import timeout as aio_timeout

UTC = timezone.utc  # datetime.UTC is Python 3.11+

log = logging.getLogger("ibgw.gate")
OFFER = Hello(versions.MIN_CLIENT, versions.LATEST)  # the range the gate can read
REFRESH = 60.0  # seconds a learned gateway version is trusted before it is asked again
_CLOCK = "%Y%m%d %H:%M:%S"


class Gateway:
    """The gateway's highest version and clock format, learned from its own hello."""

    def __init__(self, config: GateConfig):
        self.config = config
        self.max_version: int | None = None
        self._learned = 0.0
        self._offset = timedelta(0)
        self._zone = "UTC"
        self._asking: asyncio.Task | None = None

    async def dial(self, hello: Hello) -> tuple[Link, int, str]:
        """A new link to the gateway after `hello`: (link, its version, its connection time)."""
        upstream = self.config.upstream
        try:
            async with aio_timeout(self.config.handshake_timeout):
                _, link = await asyncio.get_running_loop().create_connection(
                    Link, upstream.host, upstream.port
                )
                try:  # a link half-opened is closed, whatever fails
                    link.write(hello.encode())
                    version, when = parse_server_hello(await read_frame(link, MAX_HELLO))
                except BaseException:
                    link.close(abort=True)
                    raise
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError) as exc:
            raise HandshakeError(f"gateway {upstream} did not answer: {_why(exc)}") from None
        return link, version, when

    async def version(self) -> int:
        """The gateway's highest version: asked now when unknown, in the background when old."""
        if self.max_version is None or time.monotonic() - self._learned > REFRESH:
            self.refresh()
        if self.max_version is None:
            assert self._asking is not None
            await asyncio.shield(self._asking)  # HandshakeError when the gateway does not answer
        assert self.max_version is not None
        return self.max_version

    def refresh(self) -> None:
        """Ask the gateway its highest version, unless a question is already out."""
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask())
            self._asking.add_done_callback(_quiet)

    async def _ask(self) -> None:
        link, version, when = await self.dial(OFFER)
        link.close()
        self.learn(version, when)

    def learn(self, version: int, when: str = "") -> None:
        if version != self.max_version:
            log.info("gateway %s speaks up to version %d", self.config.upstream, version)
        self.max_version, self._learned = version, time.monotonic()
        if when:
            self._clock(when)

    def _clock(self, when: str) -> None:
        try:
            moment = datetime.strptime(when[:17], _CLOCK)
        except ValueError:
            return
        offset = moment - datetime.now(UTC).replace(tzinfo=None)
        self._offset = timedelta(minutes=15 * round(offset.total_seconds() / 900))
        self._zone = when[17:].strip() or self._zone

    def connection_time(self) -> str:
        """Now, as the gateway writes its connection time (its zone's clock and name)."""
        return f"{(datetime.now(UTC).replace(tzinfo=None) + self._offset).strftime(_CLOCK)} {self._zone}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "it closed the connection"
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _quiet(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("cannot learn the gateway's version: %s", task.exception())


class Bounds:
    """Unadmitted connections, counted per source address and in two pools of `total` each: sources
    some app may connect from, and strangers (so strangers cannot crowd out the apps' logons)."""

    def __init__(self, per_source: int, total: int):
        self.per_source, self.total = per_source, total
        self.waiting: collections.Counter[object] = collections.Counter()
        self.pools = {True: 0, False: 0}  # by "some app allows the source"
        self.refused = 0
        self._logged = 0.0

    @property
    def count(self) -> int:
        return self.pools[True] + self.pools[False]

    def full(self) -> bool:
        """No room in either pool: a new connection can be closed before it is read."""
        return self.count >= 2 * self.total

    def enter(self, source: object, allowed: bool) -> bool:
        """Count one more unadmitted connection from `source`; False (counted, logged) over a bound."""
        if self.pools[allowed] >= self.total or self.waiting[source] >= self.per_source:
            self.overflow(source)
            return False
        self.pools[allowed] += 1
        self.waiting[source] += 1
        return True

    def leave(self, source: object, allowed: bool) -> None:
        self.pools[allowed] -= 1
        self.waiting[source] -= 1
        if self.waiting[source] <= 0:
            del self.waiting[source]

    def overflow(self, source: object) -> None:
        """Count a connection closed for a bound; log at most once a second."""
        self.refused += 1
        now = time.monotonic()
        if now - self._logged >= 1.0:
            self._logged = now
            log.warning(
                "unadmitted connections over their bound (%d per source, %d in total): closed one from %s; "
                "%d closed so far",
                self.per_source,
                self.total,
                source,
                self.refused,
            )


class Lobby:
    """What admission shares across connections: the gateway's version and the bounds."""

    def __init__(self, config: GateConfig):
        self.gateway = Gateway(config)
        self.bounds = Bounds(config.lobby.per_source, config.lobby.total)
        self.max_frame = config.lobby.max_frame
        self._apps = config.apps

    def allowed(self, source: IPAddress | None) -> bool:
        """Whether some app may connect from `source`."""
        return source is not None and any(app.allows(source) for app in self._apps)
