"""Trader-safe restarts: whether a gateway's restart may happen now, or waits as pending on the host.

A restart (or reload) of a gateway's units (its Xvfb, the gateway, its gate) disconnects every
app using it, and a live gateway's full login asks for a new 2FA approval. So by default it is
not done while apps are connected, nor for a live gateway inside its trading hours: the files
change, and the restart is recorded as pending (layout.pending_file) until a run is allowed to
(`--restart now`, `--restart MODE` for one gateway, or a later run outside those conditions).
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ..constrained import MODES
from ..inventory.model import Host, TradingHours
from . import layout

Mode = Literal["safe", "now"]


@dataclass(frozen=True)
class GatewayUnits:
    """One gateway's units, and what decides whether they may restart."""

    mode: str
    units: tuple[str, ...]
    api_port: int
    gate_metrics_port: int | None
    hours: TradingHours


@dataclass(frozen=True)
class Policy:
    mode: Mode = "safe"
    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))
    gateways: frozenset[str] = frozenset()  # these gateways (by mode) restart now; the rest as `mode` says


def parse(values: Iterable[str]) -> tuple[Mode, frozenset[str]]:
    """`--restart`'s values, repeatable and comma-separated: safe, now, or gateway modes (paper, live).
    A ValueError says what is wrong, in one line."""
    words = {w.strip() for value in values for w in value.split(",") if w.strip()} or {"safe"}
    unknown = sorted(words - {"safe", "now", *MODES})
    if unknown:
        modes = ", ".join(MODES)
        raise ValueError(f"unknown value {unknown[0]!r}: use safe, now, or gateway modes ({modes})")
    if words & {"safe", "now"}:
        if len(words) > 1:
            raise ValueError("give safe or now alone, or only gateway modes (e.g. live or paper,live)")
        return ("now" if "now" in words else "safe"), frozenset()
    return "safe", frozenset(words)


def gateways(host: Host) -> list[GatewayUnits]:
    found = []
    for gw in host.gateways:
        units = [layout.gateway_unit(gw.mode)]
        units += [layout.xvfb_unit(gw.mode)] if host.backend == "ibgw" else []
        units += [layout.gate_unit(gw.mode)] if host.front.gate else []
        metrics = gw.gate_metrics_port if host.front.gate else None
        found.append(GatewayUnits(gw.mode, tuple(units), gw.api_port, metrics, gw.trading_hours))
    return found


def in_trading_hours(hours: TradingHours, now: datetime.datetime) -> bool:
    """Is `now` inside the session of its day, widened by the margin on both sides?"""
    margin = _duration(hours.margin)
    local = now.astimezone(zoneinfo.ZoneInfo(hours.time_zone))
    for day in (
        local.date() - datetime.timedelta(days=1),
        local.date(),
        local.date() + datetime.timedelta(days=1),
    ):
        if day.strftime("%a") not in hours.days:
            continue
        opens = datetime.datetime.combine(day, _clock(hours.open), tzinfo=local.tzinfo) - margin
        closes = datetime.datetime.combine(day, _clock(hours.close), tzinfo=local.tzinfo) + margin
        if opens <= local <= closes:
            return True
    return False


def hold(gw: GatewayUnits, policy: Policy, apps: list[str]) -> str | None:
    """Why this gateway's restart must wait, or None if it may happen now."""
    if policy.mode == "now" or gw.mode in policy.gateways:
        return None
    if apps:
        return f"{len(apps)} app{'s' if len(apps) > 1 else ''} connected ({', '.join(apps)})"
    if gw.mode == "live" and in_trading_hours(gw.hours, policy.now):
        return "inside the live gateway's trading hours"
    return None


def connected_apps(gw: GatewayUnits, facts_clients: dict, facts_gates: dict) -> list[str]:
    """Apps the gateway's restart would disconnect: by name from its gate, else its API connections."""
    named = facts_gates.get(gw.mode)
    if named is not None:
        return sorted(app for app, stats in named.items() if stats.get("connected"))
    count = int(facts_clients.get(str(gw.api_port)) or 0)
    return [f"client {i + 1} on :{gw.api_port}" for i in range(count)]


def _clock(hhmm: str) -> datetime.time:
    hour, minute = hhmm.split(":")
    return datetime.time(int(hour), int(minute))


def _duration(text: str) -> datetime.timedelta:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if match is None:  # the inventory's Duration type admits only these
        raise ValueError(f"not a duration: {text!r}")
    value, unit = match.groups()
    return datetime.timedelta(seconds=int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit])
