"""The admin socket of `ibgw sim` and `ibgw gate`: one command a line, one reply a line, owner-only."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

MAX_LINE = 1024


async def serve(path: str | os.PathLike, answer: Callable[[str], Awaitable[str]]) -> asyncio.Server:
    """Listen on the Unix socket `path`; each line gets `answer(line)` back, on its own line."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write((await answer(line[:MAX_LINE].decode("utf-8", "replace"))).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(client, path, limit=MAX_LINE)
    os.chmod(path, 0o600)
    return server
