"""`ibgw health` over SSH, against in-process servers on 127.0.0.1: the probe on the host goes
through the agent as root (sudo, with -K's password too), on the run's one connection; and when
the host cannot be reached, the front is probed from the jump host, or reported as not probed."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from ibgw_provision.observe import health
from ibgw_provision.provision.remote import AgentError, relay_tcp
from ibgw_provision.provision.transport import Target, Transport
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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
