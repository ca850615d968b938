"""Benchmark: the cost of connecting, direct and through the lab's bastion, and of a no-op run.

Needs the lab up (`tests/lab/lab up`). Provisions gw from inventories/lab.yml with SSH let in
from the operator too (build/lab/bench-*.yml), then measures:
- connect + one command (`true`): ibgw's Transport (Fabric's Connection) and bare paramiko,
  direct to the bastion and to gw through it;
- a no-op `provision` of gw, through the bastion and direct: round trips and wall time;
- one empty agent call over an open connection (sudo and the host's python3).
Usage: .venv/bin/python bench/ssh_hops.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import paramiko
import yaml

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


def lab_inventory(jump: bool) -> Path:
    """inventories/lab.yml, with SSH let in from the operator too, reached directly or through the bastion."""
    raw = yaml.safe_load((ROOT / "inventories" / "lab.yml").read_text())
    ssh = raw["hosts"]["gw"]["ssh"]
    ssh.update(key=str(LAB / "id_ed25519"), known_hosts=str(LAB / "known_hosts"))
    if not jump:
        del ssh["jump"]
    raw["hosts"]["gw"]["firewall"]["admin_cidrs"] = ["198.18.0.2/32", "198.18.0.1/32"]
    path = LAB / f"bench-{'jump' if jump else 'direct'}.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main(runs: int) -> None:
    for name, fn in (("ibgw Transport (Fabric)", ours), ("bare paramiko", bare)):
        for jump in (False, True):
            where = "gw through the bastion" if jump else "the bastion, direct"
            print(f"connect + `true`, {name}, {where}: {median_ms(lambda fn=fn, jump=jump: fn(jump), runs)}")
    opts = apply.Options(ssh=remote.SshOptions(ssh_config=NONE))
    for jump in (True, False):
        inv = inventory.load(lab_inventory(jump))
        first = apply.provision_host(inv, "gw", opts)
        assert not first.failed, first.failed
        report = apply.provision_host(inv, "gw", opts)
        assert report.changed == 0 and not report.failed, report.failed or [
            t.name for t in report.tasks if t.changed
        ]
        where = "through the bastion" if jump else "direct"
        print(
            f"no-op provision of gw {where}: {report.round_trips} round trip(s), {len(report.tasks)} tasks; "
            f"{median_ms(lambda inv=inv: apply.provision_host(inv, 'gw', opts), runs)}"
        )
    with Transport(remote.target(inv, "gw", opts=opts.ssh)) as t:
        request = {"op": "facts", "packages": [], "user": "root", "paths": [], "units": [], "markers": []}
        print(
            f"one empty agent call (sudo, python3) over an open connection: "
            f"{median_ms(lambda: remote.call_agent(t, request), runs)}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
