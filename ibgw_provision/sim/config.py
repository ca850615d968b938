"""Simulator settings, kept free of protocol-library imports so the CLI loads fast."""

from __future__ import annotations

from dataclasses import dataclass

from ..tws import versions

MIN_VERSION = 157  # ib_async's lowest; text layouts are implemented from here up
DEFAULT_MAX_VERSION = versions.LATEST
MAX_CLIENTS = 32  # API clients IB Gateway accepts at once
PAPER_ACCOUNTS, LIVE_ACCOUNTS = ("DU1234567",), ("U1234567",)


@dataclass(frozen=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    mode: str = "paper"
    accounts: tuple[str, ...] = ()
    max_version: int = DEFAULT_MAX_VERSION
    seed: int = 1
    read_only: bool = False
    tick_interval: float = 0.25
    restart_downtime: float = 5.0

    @property
    def account_names(self) -> tuple[str, ...]:
        return self.accounts or (PAPER_ACCOUNTS if self.mode == "paper" else LIVE_ACCOUNTS)
