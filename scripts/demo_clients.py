"""After `make demo`: how apps connect, shown by doing it.

Prints each front address with the apps allowed on it, then connects every
app allowed on paper at once with ib_async, through the front, as its own
client id, and prints what the gateway reports.
Usage: .venv/bin/python scripts/demo_clients.py [INVENTORY] [HOST]
"""

from __future__ import annotations

import sys

from ib_async import IB

from ibgw_provision import inventory


def main(path: str = "inventories/local.yml", name: str = "local") -> None:
    host = inventory.load(path).hosts[name]
    connect_to = host.address if host.front.bind in ("0.0.0.0", "::") else host.front.bind
    for gw in host.gateways:
        apps = ", ".join(f"{a.name} (client id {a.client_id})" for a in host.apps_for(gw.mode))
        print(f"{gw.mode}: apps connect to {connect_to}:{gw.front_port}  [{apps}]")
    paper = host.gateway("paper")
    clients = []
    try:
        for app in host.apps_for("paper"):
            ib = IB()
            ib.connect(connect_to, paper.front_port, clientId=app.client_id, timeout=15)
            clients.append((app, ib))
        for app, ib in clients:
            print(
                f"  {app.name}: connected as client {app.client_id}, server version "
                f"{ib.client.serverVersion()}, accounts {ib.managedAccounts()}, "
                f"gateway time {ib.reqCurrentTime()}"
            )
    finally:
        for _, ib in clients:
            ib.disconnect()
    print(
        f"{len(clients)} apps used the paper gateway at once through the front. "
        "Example: IB().connect('%s', %d, clientId=1)" % (connect_to, paper.front_port)
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
