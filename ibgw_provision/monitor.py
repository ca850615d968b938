"""Who is connected through the front, by app: from HAProxy's per-source stick tables.

HAProxy sees addresses, not client ids: a source maps to every app whose CIDRs
contain it, and a source no app owns is shown as unknown (refused at the door).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

from . import layout
from .inventory import Host, Inventory
from .provision import call_agent, target
from .transport import Transport


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


def samples(inv: Inventory, name: str, count: int, on_sample: Callable[[list[Source]], None]) -> None:
    """Stream `count` samples, one a second, over a single SSH command."""
    host = inv.hosts[name]
    request = {"op": "monitor", "socket": layout.HAPROXY_SOCKET, "tables": [g.mode for g in host.gateways],
               "interval": 1.0, "count": count}
    with Transport(target(inv, name, accept_new=False)) as transport:
        call_agent(transport, request, on_event=lambda m: "sample" in m and on_sample(sources(host, m["sample"], m["at"])))


def sources(host: Host, tables: dict[str, list[dict]], now: float) -> list[Source]:
    out = []
    for mode, rows in tables.items():
        for row in rows:
            address = _address(row["key"])
            connected = row.get("conn_cur", 0)
            last = now if connected else now - (layout.STICK_EXPIRE_S - row.get("exp", 0) / 1000)
            out.append(Source(mode, address, owners(host, mode, address), connected, row.get("conn_cnt", 0),
                              row.get("bytes_in_cnt", 0), row.get("bytes_out_cnt", 0), last))
    return sorted(out, key=lambda s: (s.mode, s.apps == (), s.apps, s.address))


def owners(host: Host, mode: str, address: str) -> tuple[str, ...]:
    ip = ipaddress.ip_address(address)
    return tuple(a.name for a in host.apps_for(mode)
                 if any(ip in ipaddress.ip_network(c) for c in a.sources if ip.version == ipaddress.ip_network(c).version))


def app_states(host: Host, found: list[Source]) -> Iterator[dict]:
    """The registry, with each app's connection state on each of its modes."""
    for app in host.apps:
        for mode in app.modes:
            mine = [s for s in found if s.mode == mode and app.name in s.apps]
            yield {"app": app.name, "client_id": app.client_id, "mode": mode, "sources": list(app.sources),
                   "read_only": app.read_only, "connected": sum(s.connections for s in mine) > 0,
                   "connections": sum(s.connections for s in mine),
                   "last_seen": max((s.last_seen for s in mine), default=None)}


def _address(key: str) -> str:
    ip = ipaddress.ip_address(key)
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def as_dicts(found: list[Source]) -> list[dict]:
    return [asdict(s) | {"at": time.time()} for s in found]
