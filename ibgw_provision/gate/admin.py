"""The gate's admin socket (Unix, owner-only): one command per line, one JSON reply line each.

    halt     turn the kill switch on: new orders (placeOrder, exerciseOptions) are refused
    resume   turn it off
    status   per-app state: connected, source, last seen, messages in and out, orders

The kill switch persists in the audit log, so it survives a restart. SIGUSR1 and SIGUSR2 to the
gate do the same as halt and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import sys
from pathlib import Path
from typing import Protocol

from ..service import control

if sys.version_info >= (3, 11):
    from asyncio import timeout as aio_timeout
else:  # Python 3.10 (Ubuntu 22.04's): the same context manager from async-timeout
    from async_timeout import timeout as aio_timeout

MAX_REPLY = 1 << 20
COMMANDS = ("halt", "resume", "status")


class Controls(Protocol):
    """What the admin socket needs of the gate."""

    @property
    def halted(self) -> bool: ...

    async def set_halted(self, halted: bool, by: str) -> None: ...

    def status(self) -> dict: ...


async def execute(gate: Controls, line: str) -> dict:
    match line.split():
        case ["halt"] | ["resume"] as words:
            await gate.set_halted(words[0] == "halt", "admin socket")
            return {"ok": True, "halted": gate.halted}
        case ["status"]:
            return {"ok": True, **gate.status()}
    return {"ok": False, "error": f"commands: {' | '.join(COMMANDS)}"}


async def _answers(path: Path) -> bool:
    """Is something already listening on `path`?"""
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    writer.close()
    return True


async def serve(gate: Controls, path: Path) -> asyncio.Server:
    """Listen for admin commands on `path`, replacing a stale socket but not a live gate's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if await _answers(path):
        raise OSError(errno.EADDRINUSE, f"another gate is running on admin socket {path}")
    remove(path)

    async def answer(line: str) -> str:
        return json.dumps(await execute(gate, line))

    return await control.serve(path, answer)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def command(path: Path, line: str, timeout: float = 10.0) -> dict:
    """Send one command to a running gate; its reply."""
    async with aio_timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_REPLY)
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return json.loads(await reader.readline())
        finally:
            writer.close()
