"""`ibgw health` over SSH, against in-process servers on 127.0.0.1: the probe on the host goes
through the agent as root (sudo, with -K's password too), on the run's one connection; and when
the host cannot be reached, the front is probed from the jump host, or reported as not probed."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import jsonschema
import paramiko
import pytest
import yaml
from rich.console import Console

from ibgw_provision import inventory
from ibgw_provision.observe import health, views
from ibgw_provision.provision.remote import AgentError, SshOptions, relay_tcp
from ibgw_provision.provision.transport import Target, Transport
from tests.conftest import INVENTORIES
from tests.unit.sshd_kit import fake_sudo, new_key, sshd

PASSWORD = "s3cret-sudo-pw"  # noqa: S105 (a test's stand-in)


@pytest.fixture
def key(tmp_path) -> tuple[Path, paramiko.PKey]:
    path = tmp_path / "id_ed25519"
    return path, new_key(path)


def connected(server, tmp_path: Path, key_path: Path, user: str, **kw) -> Transport:
    (tmp_path / "known_hosts").write_text(server.known_line())
    (tmp_path / "no-ssh-config").touch()
    target = Target("gw1", "127.0.0.1", server.port, user, key_path, tmp_path / "known_hosts",
                    ssh_config=tmp_path / "no-ssh-config", timeout=5, **kw)  # fmt: skip
    transport = Transport(target)
    transport.connect()
    return transport


@pytest.mark.parametrize("password", [None, PASSWORD], ids=["sudo -n", "sudo -S (-K)"])
def test_the_probe_on_the_host_is_relayed_by_the_agent_as_root_on_the_one_connection(
    tmp_path, key, sim, password
):
    env = fake_sudo(tmp_path, password)
    with sshd(tmp_path, {"admin": [key[1]]}, env=env) as server:
        with connected(server, tmp_path, key[0], "admin", become_password=password) as t:
            result = health._direct(t, 9998, sim.port, 5)
            refused = health._direct(t, 9998, _closed_port(), 5)
    assert result["ok"], result
    assert result["accounts"] and result["server_version"] > 0
    assert server.connections == 1 and server.forwarded == []  # no direct-tcpip: sshd forwards nothing
    sudo = "sudo -S -p '' " if password else "sudo -n "
    assert all(c.startswith(sudo + "python3 -c ") for c in server.commands)
    assert password is None or all(stdin.startswith(PASSWORD.encode() + b"\n") for stdin in server.stdins)
    assert not refused["ok"]
    assert "connection to 127.0.0.1:" in refused["error"] and "on the host failed" in refused["error"]


@pytest.mark.parametrize("port", ["4001", 0, 70000, True, None])
def test_the_agents_tcp_relay_takes_a_port_number_only(tmp_path, key, port):
    with sshd(tmp_path, {"root": [key[1]]}) as server:
        with connected(server, tmp_path, key[0], "root") as t:
            with pytest.raises(AgentError, match="port must be a TCP port number"):
                relay_tcp(t, port, 5)  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the front when the host cannot be reached ------------------------------------------------


def _inventory(tmp_path: Path, ssh: dict, bind: str = "127.0.0.1", address: str = "127.0.0.1", ports=()):
    """inventories/lab.yml (two gateways, a firewall, a gate) on 127.0.0.1, with these `ssh:` keys."""
    raw = yaml.safe_load((INVENTORIES / "lab.yml").read_text())
    gw = raw["hosts"]["gw"]
    gw |= {"address": address, "ssh": ssh}
    gw["front"]["bind"] = bind
    for gateway, port in zip(gw["gateways"], ports, strict=False):
        gateway["front_port"] = port
    (tmp_path / "inv.yml").write_text(yaml.safe_dump(raw))
    return inventory.load(tmp_path / "inv.yml")


def _recorded_probes(monkeypatch, inv) -> list[tuple[int, str, bool]]:
    """Replace the TWS probe: record (port, address, through a socket) and answer as the gateway."""
    calls = []
    live = {g.front_port for g in inv.hosts["gw"].gateways if g.mode == "live"}

    def fake(client_id, port, timeout, address="127.0.0.1", sock=None, tls=None):
        calls.append((port, address, sock is not None))
        if sock is not None:
            sock.close()
        return {"ok": True, "server_version": 200, "connection_time": "t", "next_valid_id": 1,
                "accounts": ["U1" if port in live else "DU1"], "round_trip_ms": 0.1}  # fmt: skip

    monkeypatch.setattr(health, "_probe", fake)
    return calls


def _listeners(count: int) -> list[socket.socket]:
    out = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        out.append(s)
    return out


def _shown(report: dict) -> str:
    schema = json.loads((Path(health.__file__).parent / "health.schema.json").read_text())
    jsonschema.validate({"schema": health.SCHEMA, "hosts": [report]}, schema)
    out = io.StringIO()
    views.health(Console(file=out, width=200), report)
    return out.getvalue()


def test_with_the_hosts_sshd_down_the_front_is_still_probed_from_the_jump_host(tmp_path, key, monkeypatch):
    fronts = _listeners(2)
    ports = [s.getsockname()[1] for s in fronts]
    with sshd(tmp_path, {"jumper": [key[1]]}) as bastion:
        (tmp_path / "kh").write_text(bastion.known_line())
        (tmp_path / "none").touch()
        ssh = {"user": "admin", "key": str(key[0]), "known_hosts": str(tmp_path / "kh"),
               "port": _closed_port(), "jump": f"jumper@127.0.0.1:{bastion.port}"}  # fmt: skip
        inv = _inventory(tmp_path, ssh, ports=ports)
        calls = _recorded_probes(monkeypatch, inv)
        report = health.check(inv, "gw", 3, SshOptions(ssh_config=tmp_path / "none"))
    for s in fronts:
        s.close()
    jump = f"jump host 1 (jumper@127.0.0.1:{bastion.port})"
    assert [f["check"] for f in report["findings"]] == ["ssh"]  # the host is down; the fronts answer
    assert "unreachable from the jump host" in report["findings"][0]["message"]
    assert sorted(calls) == sorted((p, "127.0.0.1", True) for p in ports)  # through a channel ...
    assert sorted(bastion.forwarded) == sorted(("127.0.0.1", p) for p in ports)  # ... the bastion opened
    assert [(g["front"]["ok"], g["front_from"]) for g in report["gateways"]] == [(True, jump)] * 2
    assert f"front probed from {jump}" in _shown(report)


def test_with_the_jump_host_down_the_front_is_not_probed_and_not_blamed(tmp_path, key, monkeypatch):
    (tmp_path / "kh").touch()
    (tmp_path / "none").touch()
    ssh = {"user": "admin", "key": str(key[0]), "known_hosts": str(tmp_path / "kh"),
           "jump": f"jumper@127.0.0.1:{_closed_port()}"}  # fmt: skip
    inv = _inventory(tmp_path, ssh)
    calls = _recorded_probes(monkeypatch, inv)
    report = health.check(inv, "gw", 3, SshOptions(ssh_config=tmp_path / "none"))
    assert calls == []
    assert [f["check"] for f in report["findings"]] == ["ssh"]  # no front finding, no allowlist blamed
    fronts = [g["front"] for g in report["gateways"]]
    assert [(f["ok"], f["probed"]) for f in fronts] == [(False, False)] * 2
    assert all(f["error"].startswith("not probed: jump host 1 (") for f in fronts)
    shown = _shown(report)
    assert "not probed: jump host 1" in shown and "front probed from" not in shown


def test_when_the_hops_cannot_be_worked_out_the_front_is_not_probed_from_this_machine(tmp_path, monkeypatch):
    """ssh.jump says the host is behind a bastion; its key cannot be read, so no hop is known: the
    front is not probed directly from here (not where the host is reached from)."""
    (tmp_path / "none").touch()
    ssh = {"user": "admin", "key": str(tmp_path / "missing-key"), "known_hosts": str(tmp_path / "kh"),
           "jump": "root@127.0.0.1:1"}  # fmt: skip
    inv = _inventory(tmp_path, ssh)
    calls = _recorded_probes(monkeypatch, inv)
    report = health.check(inv, "gw", 3, SshOptions(ssh_config=tmp_path / "none"))
    assert calls == []
    assert [f["check"] for f in report["findings"]] == ["ssh"]
    assert "cannot load SSH key" in report["findings"][0]["message"]
    assert {g["front"]["error"] for g in report["gateways"]} == {
        "not probed: the SSH hops could not be worked out"
    }
    assert "not probed: the SSH hops could not be worked out" in _shown(report)


def test_a_front_on_every_address_is_probed_at_the_address_ssh_resolved_not_the_alias(
    tmp_path, key, monkeypatch
):
    """address: gw-alias, ssh_config's HostName 127.0.0.1, front.bind 0.0.0.0: the front probe goes
    to 127.0.0.1, where SSH went, not to the alias (which only ssh_config knows)."""
    (tmp_path / "kh").touch()
    (tmp_path / "ssh_config").write_text(f"Host gw-alias\n  HostName 127.0.0.1\n  Port {_closed_port()}\n")
    ssh = {"user": "admin", "key": str(key[0]), "known_hosts": str(tmp_path / "kh")}
    inv = _inventory(tmp_path, ssh, bind="0.0.0.0", address="gw-alias")
    calls = _recorded_probes(monkeypatch, inv)
    report = health.check(inv, "gw", 3, SshOptions(ssh_config=tmp_path / "ssh_config"))
    assert [f["check"] for f in report["findings"]] == ["ssh"]  # its sshd is down; the front answers
    assert {address for _, address, _ in calls} == {"127.0.0.1"} and len(calls) == 2
    assert health.front_address(inv.hosts["gw"]) == "gw-alias"  # without a connection: the inventory's
