"""Will a host's processes fit in its memory? Heaps plus a per-process overhead against MemTotal.

A gateway host usually has no swap: a budget over MemTotal ends with the OOM killer choosing
a gateway. The figures (MB) and their sources are in the README ("Memory budget").
"""

from __future__ import annotations

from ..inventory.model import Host

OVERHEAD_MB = {
    "os": 200,  # kernel, systemd, journald, sshd, unattended-upgrades on a Debian cloud image
    "jvm": 250,  # one IB Gateway JVM beyond its heap: metaspace, code cache, GC, threads, AWT
    "xvfb": 30,  # one Xvfb :10x at its default screen
    "haproxy": 20,
    "nginx": 10,
    "gate": 70,  # one `ibgw gate`: 62 MB RSS measured here with three clients streaming
    "sim": 70,  # one `ibgw sim`: 62 MB RSS measured here with three clients streaming
}
WARN_WITHIN = 0.15  # warn when the budget is above 85% of MemTotal


class OverBudget(Exception):
    """The host's processes need more memory than it has: one line naming the gateways."""


def heap_mb(java_heap: str) -> int:
    """'768m' -> 768, '1g' -> 1024 (the inventory's pattern)."""
    number, unit = int(java_heap[:-1]), java_heap[-1].lower()
    return number * 1024 if unit == "g" else number


def budget(host: Host) -> list[tuple[str, int]]:
    """What each process on the host may take, in MB."""
    items = [("OS", OVERHEAD_MB["os"])]
    for gw in host.gateways:
        if host.backend == "ibgw":
            items += [
                (
                    f"IB Gateway {gw.mode} (heap {gw.java_heap} + JVM {OVERHEAD_MB['jvm']})",
                    heap_mb(gw.java_heap) + OVERHEAD_MB["jvm"],
                ),
                (f"Xvfb {gw.mode}", OVERHEAD_MB["xvfb"]),
            ]
        else:
            items.append((f"ibgw sim {gw.mode}", OVERHEAD_MB["sim"]))
        if host.front.gate:
            items.append((f"ibgw gate {gw.mode}", OVERHEAD_MB["gate"]))
    return items + [(host.front.kind, OVERHEAD_MB[host.front.kind])]


def check(name: str, host: Host, mem_total_mb: int | None) -> str | None:
    """OverBudget when the budget exceeds MemTotal; a warning line within WARN_WITHIN of it."""
    if not mem_total_mb:
        return None
    need = sum(mb for _, mb in budget(host))
    if need <= mem_total_mb * (1 - WARN_WITHIN):
        return None
    heaps = ", ".join(f"{gw.mode} {gw.java_heap}" for gw in host.gateways) if host.backend == "ibgw" else ""
    what = f"needs about {need} MB ({_gateways(host, heaps)} and their overhead)"
    if need > mem_total_mb:
        raise OverBudget(
            f"{name}: {what}, more than its {mem_total_mb} MB (MemTotal, no swap assumed): "
            "lower the gateways' java_heap or use a larger host"
        )
    return f"{name}: {what}: {100 * need // mem_total_mb}% of its {mem_total_mb} MB; little room is left"


def _gateways(host: Host, heaps: str) -> str:
    if heaps:
        return f"gateways with java_heap {heaps}"
    return f"{len(host.gateways)} simulated gateways"
