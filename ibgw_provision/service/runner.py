"""One start-up loop for ibgw's long-running services (`ibgw sim`, `ibgw gate`).

Logging to stderr, the event loop, SIGTERM and SIGINT for a clean stop, service-specific
signals, and systemd's readiness notification once the service listens.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from . import sdnotify

Action = Callable[[], Coroutine[Any, Any, None]]


def run(main: Coroutine[Any, Any, None], name: str, verbose: bool, fast: bool = False) -> None:
    """Log to stderr as `name`, then run `main` to its end; on uvloop if `fast` and it is installed."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
    )
    factory = _uvloop() if fast else None
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)
    else:  # Python 3.10 (Ubuntu 22.04's) has no asyncio.Runner: the same, by hand
        loop = factory() if factory else asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _uvloop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop factory when it is installed; None (asyncio's) otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve(
    start: Action,
    stop: Action,
    log: logging.Logger,
    on_signal: Mapping[signal.Signals, Action] | None = None,
    finish_actions: bool = True,
) -> None:
    """Start, tell systemd we are ready, and stop at SIGTERM or SIGINT. `stop` runs even if `start` failed.

    Each signal in `on_signal` runs its action as a task. At stop, actions still running are awaited
    first when `finish_actions`; otherwise they are cancelled when the loop closes.
    """
    loop, stopping = asyncio.get_running_loop(), asyncio.Event()
    running: set[asyncio.Task] = set()

    def spawn(action: Action) -> None:
        task = loop.create_task(action())
        running.add(task)
        task.add_done_callback(running.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):  # handlers first: a signal may follow the first log line
        loop.add_signal_handler(sig, stopping.set)
    for sig, action in (on_signal or {}).items():
        loop.add_signal_handler(sig, spawn, action)
    try:
        await start()
        sdnotify.ready()
        await stopping.wait()
        log.info("shutting down")
    finally:
        if running and finish_actions:
            await asyncio.wait(running)
        await stop()
