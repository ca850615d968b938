"""After `make demo`: how apps connect, shown by doing it.

Prints each front address with the apps allowed on it, then connects every app allowed on
paper at once with ib_async, through the front, as its own client id, and prints what the
gateway reports.

Usage: .venv/bin/python scripts/demo_clients.py [INVENTORY] [HOST] [--lab]

With --lab (the lab's inventory), each app connects from a lab machine inside its own allowlist
(app-a or app-b, from build/lab/lab.env), in that machine's network namespace.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

from ib_async import IB

from ibgw_provision import inventory

ROOT = Path(__file__).resolve().parent.parent
LAB_ENV = ROOT / "build" / "lab" / "lab.env"
LAB_APP_NODES = {"app-a": "LAB_APP_A", "app-b": "LAB_APP_B"}
HOLD_SECONDS = 3  # each app stays connected this long, so that all are connected at once


def connect(address: str, port: int, client_id: int, name: str, hold: float = 0) -> None:
    """Log on as one app, print what the gateway says, stay `hold` seconds, log off."""
    ib = IB()
    ib.connect(address, port, clientId=client_id, timeout=15)
    try:
        print(
            f"  {name}: connected as client {client_id}, server version {ib.client.serverVersion()}, "
            f"accounts {ib.managedAccounts()}, gateway time {ib.reqCurrentTime()}",
            flush=True,
        )
        ib.sleep(hold)
    finally:
        ib.disconnect()


def lab_nodes() -> dict[str, ipaddress.IPv4Address]:
    """The lab's app machines and their addresses (the lab writes lab.env when it comes up)."""
    values = dict(line.split("=", 1) for line in LAB_ENV.read_text().splitlines() if "=" in line)
    return {node: ipaddress.IPv4Address(values[key]) for node, key in LAB_APP_NODES.items()}


def node_for(sources: list[str], nodes: dict[str, ipaddress.IPv4Address]) -> str:
    for node, address in nodes.items():
        if any(address in ipaddress.ip_network(cidr) for cidr in sources):
            return node
    raise SystemExit(f"no lab machine is inside the allowlist {sources}")


def main(args: list[str]) -> None:
    lab = "--lab" in args
    path, name = ([a for a in args if a != "--lab"] + ["inventories/local.yml", "local"])[:2]
    host = inventory.load(path).hosts[name]
    connect_to = host.address if host.front.bind in ("0.0.0.0", "::") else host.front.bind
    for gw in host.gateways:
        apps = ", ".join(f"{a.name} (client id {a.client_id})" for a in host.apps_for(gw.mode))
        print(f"{gw.mode}: apps connect to {connect_to}:{gw.front_port}  [{apps}]")
    port = host.gateway("paper").front_port
    apps = host.apps_for("paper")
    nodes = lab_nodes() if lab else {}
    children = []
    for app in apps:
        argv = [sys.executable, __file__, "--one", connect_to, str(port), str(app.client_id), app.name]
        if lab:
            node = node_for(list(app.sources), nodes)
            argv = [str(ROOT / "tests" / "lab" / "lab"), "exec", node, *argv]
            print(f"  {app.name} connects from {node} ({nodes[node]})")
        children.append(subprocess.Popen(argv))
    failed = [c.args for c in children if c.wait(timeout=60) != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(apps)} apps could not use the paper gateway")
    print(
        f"{len(apps)} apps used the paper gateway at once through the front. "
        f"Example: IB().connect('{connect_to}', {port}, clientId=1)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        address, port, client_id, name = sys.argv[2:6]
        connect(address, int(port), int(client_id), name, hold=HOLD_SECONDS)
    else:
        main(sys.argv[1:])
