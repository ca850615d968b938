"""`ibgw sim`: run the simulated IB Gateway in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal

import click

from ..service import runner
from ..tws import versions
from . import admin
from .config import MIN_VERSION, SimConfig

log = logging.getLogger("ibgw.sim")
_ACCOUNT = re.compile(r"[A-Z]{1,2}\d{3,12}")
_LISTEN = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})")


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    match = _LISTEN.fullmatch(value)
    if not match or int(match[2]) > 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (port 0-65535; 0 picks a free port)")
    return match[1].strip("[]"), int(match[2])


def _accounts(mode: str, value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = tuple(a.strip() for a in value.split(","))
    prefix = "DU" if mode == "paper" else "U"
    for name in names:
        if (
            not _ACCOUNT.fullmatch(name)
            or not name.startswith(prefix)
            or (mode == "live" and name.startswith("DU"))
        ):
            raise click.BadParameter(
                f"{name!r}: {mode} accounts look like {prefix}1234567", param_hint="'--accounts'"
            )
    if len(set(names)) != len(names):
        raise click.BadParameter("an account is listed twice", param_hint="'--accounts'")
    return names


@contextlib.contextmanager
def _listen_errors(option: str, address: str | None):
    """A socket that cannot be bound is a bad option value: a clear message and exit 2."""
    try:
        yield
    except OSError as exc:
        raise click.BadParameter(
            f"cannot listen on {address}: {exc.strerror or exc}", param_hint=option
        ) from None


async def _run(config: SimConfig, admin_socket: str | None) -> None:
    from .server import SimServer  # loads ibapi's protobuf modules: only when the simulator runs

    server = SimServer(config)
    control: list[asyncio.Server] = []

    async def start() -> None:
        if admin_socket:
            with _listen_errors("'--admin-socket'", admin_socket):
                control.append(await admin.serve(server, admin_socket))
        with _listen_errors("'--listen'", f"{config.host}:{config.port}"):
            await server.start()

    async def stop() -> None:
        if control and admin_socket:
            control[0].close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(admin_socket)
        await server.stop()

    await runner.serve(
        start,
        stop,
        log,
        {signal.SIGUSR1: lambda: server.restart(config.restart_downtime)},
        finish_actions=False,
    )


@click.command("sim")
@click.option(
    "--listen",
    required=True,
    callback=_listen,
    metavar="HOST:PORT",
    help="Address for the API port, e.g. 127.0.0.1:4002 (port 0 picks a free one).",
)
@click.option(
    "--mode",
    required=True,
    type=click.Choice(["paper", "live"]),
    help="paper: accounts start with DU; live: with U.",
)
@click.option("--accounts", metavar="A,B", help="Managed accounts to report (default DU1234567 or U1234567).")
@click.option(
    "--max-version",
    type=click.IntRange(MIN_VERSION, versions.LATEST),
    default=versions.LATEST,
    show_default=True,
    help="Highest server version to negotiate.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the price random walk.")
@click.option("--read-only", is_flag=True, help="Refuse orders like a read-only API (error 321).")
@click.option(
    "--tick-interval",
    type=click.FloatRange(0.001, 60),
    default=0.25,
    show_default=True,
    help="Seconds between market data updates.",
)
@click.option("--admin-socket", type=click.Path(dir_okay=False), help="Unix socket for fault controls.")
@click.option(
    "--restart-downtime",
    type=click.FloatRange(0, 86400),
    default=5.0,
    show_default=True,
    help="Seconds a simulated daily restart (SIGUSR1 or 'restart') refuses connections.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def sim(
    listen: tuple[str, int],
    mode: str,
    accounts: str | None,
    max_version: int,
    seed: int,
    read_only: bool,
    tick_interval: float,
    admin_socket: str | None,
    restart_downtime: float,
    verbose: bool,
) -> None:
    """Run a simulated IB Gateway that speaks the TWS API (ibapi and ib_async clients).

    Runs in the foreground; SIGTERM or Ctrl-C exits cleanly, SIGUSR1 simulates the daily restart.
    """
    config = SimConfig(
        host=listen[0],
        port=listen[1],
        mode=mode,
        accounts=_accounts(mode, accounts),
        max_version=max_version,
        seed=seed,
        read_only=read_only,
        tick_interval=tick_interval,
        restart_downtime=restart_downtime,
    )
    runner.run(_run(config, admin_socket), "ibgw-sim", verbose)
