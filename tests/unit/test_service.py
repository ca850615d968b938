"""The start-up loop sim and gate share: readiness, signals, a clean stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import tempfile

import pytest

from ibgw_provision.service import runner

LOG = logging.getLogger("test.service")


@pytest.fixture
def notify(monkeypatch):
    """A NOTIFY_SOCKET that records what the service tells systemd."""
    with tempfile.TemporaryDirectory(prefix="ibgw-") as tmp:
        path = os.path.join(tmp, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.setblocking(False)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield sock


async def _until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_ready_after_start_then_signals_then_a_clean_stop(notify):
    events: list[str] = []

    async def start() -> None:
        events.append("start")

    async def stop() -> None:
        events.append("stop")

    async def action() -> None:  # still running at SIGTERM: awaited before stop
        events.append("action")
        await asyncio.sleep(0.1)
        events.append("action done")

    async def main() -> None:
        service = asyncio.create_task(runner.serve(start, stop, LOG, {signal.SIGUSR1: action}))
        await _until(lambda: "start" in events)
        assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(notify, 64), 5) == b"READY=1"
        os.kill(os.getpid(), signal.SIGUSR1)
        await _until(lambda: "action" in events)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(service, 5)

    asyncio.run(main())
    assert events == ["start", "action", "action done", "stop"]


def test_stop_runs_when_start_fails_and_nothing_is_ready(notify):
    stopped = []

    async def start() -> None:
        raise OSError("address in use")

    async def stop() -> None:
        stopped.append(True)

    with pytest.raises(OSError, match="address in use"):
        asyncio.run(asyncio.wait_for(runner.serve(start, stop, LOG), 5))
    assert stopped == [True]
    with pytest.raises(BlockingIOError):
        notify.recv(64)
