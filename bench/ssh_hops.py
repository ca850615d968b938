"""Benchmark: the cost of connecting, direct and through the lab's bastion, and of a no-op run.

Needs the lab up (`tests/lab/lab up`) and gw provisioned from inventories/lab.yml. Measures:
- connect + one command (`true`): ibgw's Transport (Fabric's Connection) and bare paramiko,
  direct to the bastion and to gw through it;
- a no-op `provision` of gw through the bastion: round trips, connections, and its phases.
Usage: .venv/bin/python bench/ssh_hops.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import paramiko

from ibgw_provision import inventory
from ibgw_provision.provision import apply, remote
from ibgw_provision.provision.transport import Target, Transport

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "build" / "lab"
BASTION, GW = "198.18.0.2", "198.18.0.10"
NONE = Path("/dev/null")  # no ssh_config: the operator's own must not change the numbers


def median_ms(fn, runs: int) -> str:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return f"median {statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f})"


def ours(jump: bool) -> None:
    target = Target(
        "gw" if jump else "bastion", GW if jump else BASTION, 22, "admin" if jump else "root",
        LAB / "id_ed25519", LAB / "known_hosts", jump=(f"root@{BASTION}",) if jump else (), ssh_config=NONE,
    )  # fmt: skip
    with Transport(target) as t:
        assert t.run("true").rc == 0


def bare(jump: bool) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(LAB / "id_ed25519"))
    clients = []
    sock = None
    for host, user in ([(BASTION, "root")] if jump else []) + [
        (GW if jump else BASTION, "admin" if jump else "root")
    ]:
        client = paramiko.SSHClient()
        client.load_host_keys(str(LAB / "known_hosts"))
        client.connect(
            host, 22, user, pkey=key, sock=sock, allow_agent=False, look_for_keys=False, timeout=10
        )
        clients.append(client)
        sock = None
        if host == BASTION and jump:
            sock = client.get_transport().open_channel("direct-tcpip", (GW, 22), ("", 0))
    _, out, _ = clients[-1].exec_command("true")
    assert out.channel.recv_exit_status() == 0
    for client in reversed(clients):
        client.close()


def main(runs: int) -> None:
    for name, fn in (("ibgw Transport (Fabric)", ours), ("bare paramiko", bare)):
        for jump in (False, True):
            where = "gw through the bastion" if jump else "the bastion, direct"
            print(f"connect + `true`, {name}, {where}: {median_ms(lambda fn=fn, jump=jump: fn(jump), runs)}")
    inv = inventory.load(ROOT / "inventories" / "lab.yml")
    opts = apply.Options(ssh=remote.SshOptions(ssh_config=NONE))
    report = apply.provision_host(inv, "gw", opts)
    assert report.changed == 0 and not report.failed, report.failed or [
        t.name for t in report.tasks if t.changed
    ]
    print(
        f"no-op provision of gw through the bastion: {report.round_trips} round trip(s), "
        f"{len(report.tasks)} tasks; {median_ms(lambda: apply.provision_host(inv, 'gw', opts), runs)}"
    )
    target = remote.target(inv, "gw", opts=opts.ssh)
    with Transport(target) as t:
        request = {"op": "facts", "packages": [], "user": "root", "paths": [], "units": [], "markers": []}
        print(
            f"  of which one empty agent call over an open connection: "
            f"{median_ms(lambda: remote.call_agent(t, request), runs)}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
