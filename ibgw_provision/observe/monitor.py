"""Who is connected through the front, by app: from HAProxy's per-source stick tables.

HAProxy sees addresses, not client ids: a source maps to every app whose CIDRs
contain it, and a source no app owns is shown as unknown (refused at the door).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from ..constrained import Mode
from ..inventory.model import Host, Inventory
from ..provision import layout
from ..provision.remote import call_agent, target
from ..provision.transport import Transport


@dataclass(frozen=True)
class Source:
    mode: str
    address: str
    apps: tuple[str, ...]  # empty: no app owns this address
    connections: int  # open now
    total: int  # since the entry was created (refused attempts included)
    bytes_in: int
    bytes_out: int
    last_seen: float  # unix time: now while connected, else the last connect


def samples(inv: Inventory, name: str, count: int, on_sample: Callable[[list[Source], dict], None]) -> None:
    """Stream `count` samples, one a second, over a single SSH command: the front's sources, and
    per mode the gate's per-app figures (when the gate runs)."""
    host = inv.hosts[name]
    request = {
        "op": "monitor",
        "socket": layout.HAPROXY_SOCKET,
        "tables": [g.mode for g in host.gateways],
        "gates": {g.mode: g.gate_metrics_port for g in host.gateways} if host.front.gate else {},
        "interval": 1.0,
        "count": count,
    }

    def on_event(message: dict) -> None:
        if "sample" in message:
            on_sample(sources(host, message["sample"], message["at"]), message["gates"])

    with Transport(target(inv, name, accept_new=False)) as transport:
        call_agent(transport, request, on_event=on_event)


def sources(host: Host, tables: dict[Mode, list[dict]], now: float) -> list[Source]:
    out = []
    for mode, rows in tables.items():
        for row in rows:
            address = _address(row["key"])
            connected = row.get("conn_cur", 0)
            last = now if connected else now - (layout.STICK_EXPIRE_S - row.get("exp", 0) / 1000)
            out.append(
                Source(
                    mode,
                    address,
                    owners(host, mode, address),
                    connected,
                    row.get("conn_cnt", 0),
                    row.get("bytes_in_cnt", 0),
                    row.get("bytes_out_cnt", 0),
                    last,
                )
            )
    return sorted(out, key=lambda s: (s.mode, s.apps == (), s.apps, s.address))


def owners(host: Host, mode: Mode, address: str) -> tuple[str, ...]:
    ip = ipaddress.ip_address(address)
    nets = {c: ipaddress.ip_network(c) for a in host.apps_for(mode) for c in a.sources}
    return tuple(
        a.name
        for a in host.apps_for(mode)
        if any(nets[c].version == ip.version and ip in nets[c] for c in a.sources)
    )


def app_states(host: Host, found: list[Source], gates: dict) -> Iterator[dict]:
    """The registry, with each app's state on each of its modes: from the gate, which knows client
    ids, when it runs; else from the front's sources."""
    for app in host.apps:
        for mode in app.modes:
            row = {
                "app": app.name,
                "client_id": app.client_id,
                "mode": mode,
                "sources": list(app.sources),
                "read_only": app.read_only,
            }
            gate = (gates.get(mode) or {}).get(app.name)
            if gate is not None:
                yield row | {
                    "seen_by": "gate",
                    "connected": gate.get("connected", 0) > 0,
                    "last_seen": gate.get("last_seen"),
                    "messages_in": int(gate.get("messages_in", 0)),
                    "messages_out": int(gate.get("messages_out", 0)),
                }
                continue
            mine = [s for s in found if s.mode == mode and app.name in s.apps]
            yield row | {
                "seen_by": "front",
                "connected": sum(s.connections for s in mine) > 0,
                "last_seen": max((s.last_seen for s in mine), default=None),
            }


def _address(key: str) -> str:
    ip = ipaddress.ip_address(key)
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def as_dicts(found: list[Source]) -> list[dict]:
    return [asdict(s) | {"at": time.time()} for s in found]
