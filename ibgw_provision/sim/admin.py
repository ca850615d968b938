"""Fault controls over a local Unix socket: one command per line, one reply line each.

    restart [SECONDS]   simulate the daily restart: drop every client, refuse connections for
                        SECONDS (default: --restart-downtime), then accept again
    latency MS          delay everything sent to clients by MS milliseconds (0 turns it off)
    status              listening state, clients, market data lines, latency, messages delayed

From a shell: ``python -m ibgw_provision.sim.admin /run/ibgw-sim.sock restart 30``
(or ``printf 'restart 30\\n' | socat - UNIX-CONNECT:/run/ibgw-sim.sock``).
SIGUSR1 to the simulator also triggers a restart with the default downtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import sys
from collections.abc import Collection, Sized
from typing import Protocol

from ..service import control

if sys.version_info >= (3, 11):
    from asyncio import timeout as aio_timeout
else:  # Python 3.10 (Ubuntu 22.04's): the same context manager from async-timeout
    from async_timeout import timeout as aio_timeout


class Delaying(Protocol):
    @property
    def delayed(self) -> int: ...


class Controls(Protocol):
    """What the admin commands need of the simulator."""

    @property
    def restart_downtime(self) -> float: ...

    @property
    def latency(self) -> float: ...

    @property
    def listening(self) -> bool: ...

    @property
    def port(self) -> int: ...

    @property
    def connections(self) -> Collection[Delaying]: ...

    @property
    def sessions(self) -> Sized: ...

    def lines_in_use(self) -> int: ...

    def set_latency(self, seconds: float) -> None: ...

    async def restart(self, downtime: float) -> None: ...


def _seconds(text: str, scale: float = 1.0) -> float:
    value = float(text) * scale
    if not 0 <= value <= 86400:
        raise ValueError(f"{text} is out of range")
    return value


async def execute(server: Controls, line: str) -> str:
    """Run one admin command; the reply starts with 'ok' or 'error'."""
    words = line.split()
    try:
        match words:
            case ["restart"]:
                downtime = server.restart_downtime
            case ["restart", seconds]:
                downtime = _seconds(seconds)
            case ["latency", millis]:
                server.set_latency(_seconds(millis, 0.001))
                return f"ok latency {server.latency * 1000:g} ms"
            case ["status"]:
                delayed = sum(s.delayed for s in server.connections)
                return (
                    f"ok listening={int(server.listening)} port={server.port} clients={len(server.sessions)} "
                    f"lines={server.lines_in_use()} latency_ms={server.latency * 1000:g} delayed={delayed}"
                )
            case _:
                return "error commands: restart [SECONDS] | latency MS | status"
    except ValueError as exc:
        return f"error {exc}"
    await server.restart(downtime)
    return f"ok restarting, down for {downtime:g}s"


async def serve(server: Controls, path: str) -> asyncio.Server:
    """Listen for admin commands on the Unix socket `path` (owner-only), replacing a stale socket there."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
        os.unlink(path)
    return await control.serve(path, lambda line: execute(server, line))


async def command(path: str, line: str, timeout: float = 10.0) -> str:
    """Send one command to a running simulator and return its reply."""
    async with aio_timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.readline()).decode().strip()
        finally:
            writer.close()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(
            "usage: python -m ibgw_provision.sim.admin SOCKET restart [SECONDS] | latency MS | status",
            file=sys.stderr,
        )
        return 2
    try:
        reply = asyncio.run(command(argv[0], " ".join(argv[1:])))
    except (OSError, TimeoutError) as exc:
        print(f"error: {argv[0]}: {exc}", file=sys.stderr)
        return 1
    print(reply)
    return 0 if reply.startswith("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
