"""Logging in over SSH, against in-process servers on 127.0.0.1: host keys at every hop (known_hosts
as OpenSSH writes it), keys and passphrases, the SSH agent, jump hosts, ssh_config, sudo (with and
without a password), a refused root login, staged uploads, and the cost of a no-op run."""

from __future__ import annotations

import dataclasses
import getpass
import grp
import os
import signal
import socket
import subprocess
from pathlib import Path

import paramiko
import pytest
import yaml

from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import absence, apply, layout, state, wheelhouse
from ibgw_provision.provision.plan import Plan
from ibgw_provision.provision.remote import AgentError, SshOptions, call_agent, target
from ibgw_provision.provision.transport import SshError, Target, Transport
from tests.conftest import INVENTORIES
from tests.unit.sshd_kit import fake_sudo, new_key, sshd
from tests.unit.test_plan import converged

PASSWORD = "s3cret-sudo-pw"  # noqa: S105 (a test's stand-in)
MESSAGE = 'Please login as the user "admin" rather than the user "root".'


@pytest.fixture
def key(tmp_path) -> tuple[Path, paramiko.PKey]:
    path = tmp_path / "id_ed25519"
    return path, new_key(path)


def facts_request(tmp_path: Path) -> dict:
    """A facts request that any machine can answer: nothing but a temporary path."""
    return {
        "op": "facts",
        "packages": [],
        "user": "root",
        "paths": [str(tmp_path)],
        "units": [],
        "markers": [],
    }


def connect(server, tmp_path, key_path, user="root", known=None, **kw) -> Transport:
    known = known or tmp_path / "known_hosts"
    if not known.exists():
        known.write_text(server.known_line())
    transport = Transport(
        Target(
            "gw1",
            "127.0.0.1",
            server.port,
            user,
            key_path,
            known,
            timeout=5,
            ssh_config=tmp_path / "no-ssh-config",
            **kw,
        )
    )
    (tmp_path / "no-ssh-config").touch()
    transport.connect()
    return transport


def fails(transport_or_target, tmp_path=None) -> str:
    """Connect, expecting failure; the one-line reason."""
    transport = (
        transport_or_target if isinstance(transport_or_target, Transport) else Transport(transport_or_target)
    )
    with pytest.raises(SshError) as exc:
        transport.connect()
    assert "\n" not in str(exc.value)
    return str(exc.value)


# ---- sudo, the agent and a refused root -------------------------------------------------------


def test_a_sudo_user_runs_the_agent_through_sudo_n(tmp_path, key):
    env = fake_sudo(tmp_path)
    with sshd(tmp_path, {"admin": [key[1]]}, env=env) as server:
        with connect(server, tmp_path, key[0], user="admin") as t:
            facts = call_agent(t, facts_request(tmp_path))
    assert facts["paths"][str(tmp_path)]["kind"] == "dir"
    assert server.commands[0].startswith("sudo -n python3 -c ")
    assert Path(env["SUDO_LOG"]).read_text().startswith("-n python3 -c ")


def test_root_runs_the_agent_without_sudo(tmp_path, key):
    with sshd(tmp_path, {"root": [key[1]]}, env=fake_sudo(tmp_path)) as server:
        with connect(server, tmp_path, key[0]) as t:
            call_agent(t, facts_request(tmp_path))
    assert server.commands[0].startswith("python3 -c ")
    assert not (tmp_path / "sudo.log").exists()


def test_the_become_password_is_stdins_first_line_and_in_no_argv(tmp_path, key):
    env = fake_sudo(tmp_path, PASSWORD)
    with sshd(tmp_path, {"admin": [key[1]]}, env=env) as server:
        with connect(server, tmp_path, key[0], user="admin", become_password=PASSWORD) as t:
            facts = call_agent(t, facts_request(tmp_path))
            assert t.round_trips == 1
    assert facts["paths"][str(tmp_path)]["kind"] == "dir"
    assert server.stdins[0].startswith(PASSWORD.encode() + b"\nIBGW-AGENT ")
    assert server.commands[0].startswith("sudo -S -p '' python3 -c ")
    assert PASSWORD not in " ".join(server.commands)
    assert PASSWORD not in Path(env["SUDO_LOG"]).read_text()


def test_a_become_password_sudo_does_not_read_is_skipped_by_the_boot_reader(tmp_path, key):
    """NOPASSWD, or sudo's cached credentials: the password line stays on stdin, before the agent."""
    with sshd(tmp_path, {"admin": [key[1]]}, env=fake_sudo(tmp_path, password=None)) as server:
        with connect(server, tmp_path, key[0], user="admin", become_password=PASSWORD) as t:
            facts = call_agent(t, facts_request(tmp_path))
    assert facts["paths"][str(tmp_path)]["kind"] == "dir"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("wrong-password", "gw1: sudo refused the password given with -K for admin"),
        (None, "gw1: sudo needs a password for admin: pass -K (--ask-become-pass), or allow it NOPASSWD"),
    ],
)
def test_sudo_refusals_are_one_line_without_the_password(tmp_path, key, given, expected):
    with sshd(tmp_path, {"admin": [key[1]]}, env=fake_sudo(tmp_path, PASSWORD)) as server:
        with connect(server, tmp_path, key[0], user="admin", become_password=given) as t:
            with pytest.raises(AgentError) as exc:
                call_agent(t, facts_request(tmp_path))
    assert str(exc.value) == expected


def test_a_refused_root_login_shows_the_hosts_message_without_waiting_for_its_sleep(tmp_path, key):
    with sshd(tmp_path, {"root": [key[1]]}, forced={"root": (MESSAGE, 142)}) as server:
        with connect(server, tmp_path, key[0]) as t:
            with pytest.raises(AgentError) as exc:
                call_agent(t, facts_request(tmp_path))
    assert str(exc.value) == f"gw1: root login refused by the host: {MESSAGE}; set ssh.user in the inventory"


# ---- uploads ----------------------------------------------------------------------------------


def _uploads(tmp_path: Path) -> list[tuple[Path, str]]:
    local = tmp_path / "operator"
    local.mkdir()
    (local / "IBCLinux-3.20.0.zip").write_bytes(b"PK\x03\x04 ibc" * 1000)
    (local / "ibgw.whl").write_bytes(b"wheel bytes")
    dest = tmp_path / "host" / "opt" / "ibgw"
    return [
        (local / "IBCLinux-3.20.0.zip", f"{dest}/uploads/ibc.zip"),
        (local / "ibgw.whl", f"{dest}/wheels/ibgw.whl"),
    ]


def test_uploads_are_staged_privately_then_moved_into_place_by_the_agent(tmp_path, key):
    uploads = _uploads(tmp_path)
    with sshd(tmp_path, {"admin": [key[1]]}, env=fake_sudo(tmp_path)) as server:
        with connect(server, tmp_path, key[0], user="admin") as t:
            stage, step = apply._stage(t, uploads)
            assert Path(stage).parent == server.home and os.stat(stage).st_mode & 0o777 == 0o700
            step["files"] = [
                f | {"owner": getpass.getuser(), "group": grp.getgrgid(os.getgid()).gr_name, "mode": 0o640}
                for f in step["files"]
            ]
            result = call_agent(t, {"op": "apply", "steps": [step]})
            assert t.round_trips == len(uploads) + 1
    assert result == {"applied": 1, "failed": None}
    for local, remote in uploads:
        assert Path(remote).read_bytes() == local.read_bytes()
        assert os.stat(remote).st_mode & 0o777 == 0o640
    assert not Path(stage).exists()


def test_a_staged_file_changed_before_the_move_is_refused_and_the_stage_removed(tmp_path, key):
    uploads = _uploads(tmp_path)
    with sshd(tmp_path, {"admin": [key[1]]}, env=fake_sudo(tmp_path)) as server:
        with connect(server, tmp_path, key[0], user="admin") as t:
            stage, step = apply._stage(t, uploads)
            Path(step["files"][1]["from"]).write_bytes(b"tampered")
            step["files"] = [
                f | {"owner": getpass.getuser(), "group": grp.getgrgid(os.getgid()).gr_name}
                for f in step["files"]
            ]
            result = call_agent(t, {"op": "apply", "steps": [step]})
    assert result["failed"] == step["task"]
    assert "sha256 differs from the operator's file" in result["error"]
    assert not Path(uploads[1][1]).exists() and not Path(stage).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the uploads land owned by root, as on a host")
def test_apply_stages_uploads_for_a_sudo_user(tmp_path, key):
    uploads = _uploads(tmp_path)
    report = apply.Report("gw1")
    with sshd(tmp_path, {"admin": [key[1]]}, env=fake_sudo(tmp_path)) as server:
        with connect(server, tmp_path, key[0], user="admin") as t:
            apply._apply(t, Plan(uploads=uploads), "gw1", apply.Options(), report)
    assert report.failed is None
    assert [Path(r).read_bytes() for _, r in uploads] == [p.read_bytes() for p, _ in uploads]
    assert not list(server.home.glob(".ibgw-upload-*"))


# ---- the cost of a no-op run ------------------------------------------------------------------


@pytest.mark.parametrize("user", ["root", "admin"])
@pytest.mark.parametrize("via_jump", [False, True], ids=["direct", "jump"])
def test_a_no_op_run_is_one_connection_per_hop_and_one_command(tmp_path, key, monkeypatch, user, via_jump):
    monkeypatch.setattr("ibgw_provision.inventory.secrets._read", lambda ref: f"secret-{ref.env or 'file'}")
    wheels = wheelhouse.Wheelhouse(tmp_path, (), "stamp", "ibgw")
    monkeypatch.setattr(wheelhouse, "build", lambda *a: wheels)
    raw = yaml.safe_load((INVENTORIES / "example.yml").read_text())
    raw["hosts"]["gw1"]["front"].pop("tls", None)  # no app CA on this machine: plain TCP apps
    with sshd(tmp_path, {user: [key[1]]}) as gw, sshd(tmp_path, {"jumper": [key[1]]}) as bastion:
        (tmp_path / "known_hosts").write_text(gw.known_line() + bastion.known_line())
        raw["hosts"]["gw1"].update(
            address="127.0.0.1",
            ssh={
                "user": user,
                "port": gw.port,
                "key": str(key[0]),
                "known_hosts": str(tmp_path / "known_hosts"),
                **({"jump": f"jumper@127.0.0.1:{bastion.port}"} if via_jump else {}),
            },
        )
        (tmp_path / "inv.yml").write_text(yaml.safe_dump(raw))
        from ibgw_provision import inventory

        inv = inventory.load(tmp_path / "inv.yml")
        want = state.desired(inv, "gw1", Secrets())
        facts = converged(want) | {
            "markers": converged(want)["markers"] | {f"{layout.VENV}/{layout.VENV_STAMP}": "stamp"},
            "firewall": True,
            "manifest": absence.wanted(want, wheels),  # the venv is ibgw's too
            "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
        }
        gw.agent_reply = lambda request: facts | {"python": "3.11.2", "glibc": "2.36", "arch": "x86_64"}
        opts = apply.Options(ssh=SshOptions(ssh_config=tmp_path / "none"))
        (tmp_path / "none").touch()
        report = apply.provision_host(inv, "gw1", opts)
    assert report.failed is None and report.changed == 0 and report.ok > 20
    assert report.round_trips == 1 and len(gw.commands) == 1 and gw.connections == 1
    assert gw.commands[0].startswith("sudo -n " if user == "admin" else "python3 ")
    assert (bastion.connections, bastion.commands, len(bastion.forwarded)) == (
        (1, [], 1) if via_jump else (0, [], 0)
    )


@pytest.mark.parametrize("given_by", ["command line", "ssh_config"])
def test_the_firewall_names_the_user_the_run_logged_in_as(tmp_path, key, monkeypatch, given_by):
    """The inventory says root (or nothing); --user or ssh_config's User says deploy: the lo rule
    that lets the login's forwards reach the API ports must name deploy, the user really logged in."""
    monkeypatch.setattr("ibgw_provision.inventory.secrets._read", lambda ref: f"secret-{ref.env or 'file'}")
    raw = yaml.safe_load((INVENTORIES / "example.yml").read_text())
    wheels = wheelhouse.Wheelhouse(tmp_path, (), "stamp", "ibgw")
    monkeypatch.setattr(wheelhouse, "build", lambda *a: wheels)
    raw["hosts"]["gw1"]["front"].pop("tls", None)
    with sshd(tmp_path, {"deploy": [key[1]]}) as gw:
        (tmp_path / "known_hosts").write_text(gw.known_line())
        ssh = {"port": gw.port, "key": str(key[0]), "known_hosts": str(tmp_path / "known_hosts")}
        raw["hosts"]["gw1"].update(
            address="127.0.0.1", ssh=ssh | ({"user": "root"} if given_by == "command line" else {})
        )
        (tmp_path / "inv.yml").write_text(yaml.safe_dump(raw))
        (tmp_path / "ssh_config").write_text(
            "Host 127.0.0.1\n  User deploy\n" if given_by == "ssh_config" else ""
        )
        from ibgw_provision import inventory

        inv = inventory.load(tmp_path / "inv.yml")

        def reply(request: dict) -> dict:
            want = state.desired(inv, "gw1", Secrets(), "deploy")
            return converged(want) | {
                "markers": converged(want)["markers"] | {f"{layout.VENV}/{layout.VENV_STAMP}": "stamp"},
                "firewall": True,
                "manifest": absence.wanted(want, wheels),
                "os": {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
                "python": "3.11.2",
                "glibc": "2.36",
                "arch": "x86_64",
            }

        gw.agent_reply = reply
        user = "deploy" if given_by == "command line" else None
        opts = apply.Options(check=True, ssh=SshOptions(user=user, ssh_config=tmp_path / "ssh_config"))
        report = apply.provision_host(inv, "gw1", opts)
    assert report.failed is None, report.failed
    assert [t.name for t in report.tasks if t.changed] == []  # the host was converged for deploy
    nft = next(f for f in state.desired(inv, "gw1", Secrets(), "deploy").files if f.path.endswith(".nft"))
    assert "meta skuid != { root, ibkr, deploy }" in nft.content


# ---- host keys --------------------------------------------------------------------------------


def test_an_unknown_host_is_refused_and_accept_new_appends_one_line_keeping_the_file(tmp_path, key):
    known = tmp_path / "known_hosts"
    other = new_key(tmp_path / "other")
    before = (
        f"# my hosts\n|1|c2FsdHNhbHRzYWx0c2FsdHNhbHQ=|aGFzaGhhc2hoYXNoaGFzaGhhc2g= "
        f"ssh-ed25519 {other.get_base64()}\n@cert-authority *.corp ssh-ed25519 {other.get_base64()}\n"
    )
    known.write_text(before)
    with sshd(tmp_path, {"root": [key[1]]}) as server:
        t = Target("gw1", "127.0.0.1", server.port, "root", key[0], known, ssh_config=tmp_path / "none")
        (tmp_path / "none").touch()
        assert "unknown host key" in fails(t) and "--accept-new-host-key" in fails(t)
        with Transport(dataclasses.replace(t, accept_new=True)) as transport:
            assert transport.run("true").rc == 0
        assert known.read_text() == before + server.known_line()
        with Transport(t) as transport:  # now known: no accept-new needed
            assert transport.run("true").rc == 0
    assert known.read_text() == before + server.known_line()


def test_a_changed_host_key_is_refused_even_with_accept_new(tmp_path, key):
    other = new_key(tmp_path / "other")
    with sshd(tmp_path, {"root": [key[1]]}) as server:
        known = tmp_path / "known_hosts"
        known.write_text(server.known_line(other))
        t = Target(
            "gw1",
            "127.0.0.1",
            server.port,
            "root",
            key[0],
            known,
            accept_new=True,
            ssh_config=tmp_path / "none",
        )
        (tmp_path / "none").touch()
        message = fails(t)
    assert message.startswith(f"root@127.0.0.1:{server.port}: host key does not match {known}: refusing")
    assert known.read_text() == server.known_line(other)


def test_hashed_known_hosts_lines_are_matched(tmp_path, key):
    with sshd(tmp_path, {"root": [key[1]]}) as server:
        name = f"[127.0.0.1]:{server.port}"
        hashed = paramiko.HostKeys.hash_host(name)
        known = tmp_path / "known_hosts"
        known.write_text(f"{hashed} {server.host_key.get_name()} {server.host_key.get_base64()}\n")
        with connect(server, tmp_path, key[0], known=known) as t:
            assert t.run("true").rc == 0


def test_a_host_trusted_only_through_a_certificate_authority_is_refused_in_one_line(tmp_path, key):
    ca = new_key(tmp_path / "ca")
    with sshd(tmp_path, {"root": [key[1]]}) as server:
        known = tmp_path / "known_hosts"
        known.write_text(f"@cert-authority [127.0.0.1]:* ssh-ed25519 {ca.get_base64()}\n")
        t = Target("gw1", "127.0.0.1", server.port, "root", key[0], known, ssh_config=tmp_path / "none")
        (tmp_path / "none").touch()
        message = fails(t)
        assert "host certificates are not supported" in message
        known.write_text(f"@cert-authority * ssh-ed25519 {ca.get_base64()}\n" + server.known_line())
        with Transport(t) as transport:  # a CA line beside the host's plain key: read, and the key verified
            assert transport.run("true").rc == 0


def test_a_revoked_host_key_is_refused(tmp_path, key):
    with sshd(tmp_path, {"root": [key[1]]}) as server:
        known = tmp_path / "known_hosts"
        known.write_text(f"@revoked * {server.host_key.get_name()} {server.host_key.get_base64()}\n")
        t = Target(
            "gw1",
            "127.0.0.1",
            server.port,
            "root",
            key[0],
            known,
            accept_new=True,
            ssh_config=tmp_path / "none",
        )
        (tmp_path / "none").touch()
        assert "marked @revoked" in fails(t)


# ---- keys, passphrases, the agent, auth ------------------------------------------------------


def test_a_passphrase_key_from_the_environment_a_secret_file_or_a_prompt(tmp_path, monkeypatch):
    path = tmp_path / "id_locked"
    locked = new_key(path, passphrase="open sesame")
    with sshd(tmp_path, {"admin": [locked]}) as server:
        monkeypatch.setenv("IBGW_SSH_PASSPHRASE", "open sesame")
        with connect(
            server, tmp_path, path, user="admin", passphrase=lambda p: os.environ["IBGW_SSH_PASSPHRASE"]
        ):
            pass
        monkeypatch.setattr("ibgw_provision.provision.transport._PASSPHRASES", {})
        asked = []
        with connect(
            server, tmp_path, path, user="admin", passphrase=lambda p: asked.append(p) or "open sesame"
        ):
            pass
        assert asked == [path]
        monkeypatch.setattr("ibgw_provision.provision.transport._PASSPHRASES", {})
        with pytest.raises(SshError, match=f"^wrong passphrase for SSH key {path}$"):
            connect(server, tmp_path, path, user="admin", passphrase=lambda p: "wrong")
        with pytest.raises(SshError, match=f"^SSH key {path} is protected by a passphrase"):
            connect(server, tmp_path, path, user="admin")


def test_ssh_passphrase_in_the_inventory_is_a_secret_reference(tmp_path, monkeypatch):
    secret = tmp_path / "passphrase"
    secret.write_text("open sesame\n")
    secret.chmod(0o600)
    path = tmp_path / "id_locked"
    new_key(path, passphrase="open sesame")
    monkeypatch.delenv("IBGW_SSH_PASSPHRASE", raising=False)
    inv = _inventory(tmp_path, {"user": "admin", "key": str(path), "passphrase": {"file": str(secret)}})
    t = target(inv, "gw1", opts=SshOptions(ssh_config=tmp_path / "none"))
    assert t.passphrase(path) == "open sesame"


@pytest.mark.parametrize(
    ("ssh", "expected"),
    [
        ({"jump": "admin@host:99999"}, "a jump host is [user@]host[:port]"),
        ({"jump": "a b"}, "a jump host is [user@]host[:port]"),
        ({"jump": []}, "list at least one host"),
        ({"passphrase": "hunter2"}, "plaintext secrets are not allowed"),
        ({"user": "root; rm"}, "String should match pattern"),
    ],
)
def test_bad_ssh_settings_are_refused_naming_the_field(tmp_path, ssh, expected):
    from ibgw_provision.errors import InputError

    with pytest.raises(InputError) as exc:
        _inventory(tmp_path, ssh)
    assert expected in str(exc.value) and "hosts.gw1.ssh." in str(exc.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot load SSH key"),
        (b"not a key\n", "cannot load SSH key"),
    ],
)
def test_a_bad_key_file_is_one_line(tmp_path, key, content, expected):
    bad = tmp_path / "bad_key"
    if content is not None:
        bad.write_bytes(content)
    with sshd(tmp_path, {"root": [key[1]]}) as server:
        with pytest.raises(SshError, match=expected):
            connect(server, tmp_path, bad)


def test_authentication_failure_and_unreachable_are_one_line(tmp_path, key):
    stranger = tmp_path / "stranger"
    new_key(stranger)
    with sshd(tmp_path, {"root": [key[1]]}) as server:
        with pytest.raises(SshError, match=rf"^root@127.0.0.1:{server.port}: authentication failed"):
            connect(server, tmp_path, stranger)
        port = server.port
    with pytest.raises(SshError, match=rf"^root@127.0.0.1:{port}: unreachable: "):
        connect(server, tmp_path, key[0])


@pytest.fixture
def ssh_agent(tmp_path):
    sock = tmp_path / "agent.sock"
    out = subprocess.run(
        ["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, timeout=10, check=True
    )
    pid = int(out.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        yield {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    finally:
        os.kill(pid, signal.SIGTERM)


def test_the_ssh_agent_is_used_beside_a_configured_key(tmp_path, key, ssh_agent, monkeypatch):
    """The inventory's key is not the one the host takes; the agent holds one it does."""
    agent_key = tmp_path / "in_agent"
    accepted = new_key(agent_key)
    subprocess.run(
        ["ssh-add", "-q", str(agent_key)], env=ssh_agent, check=True, timeout=10, capture_output=True
    )
    monkeypatch.setenv("SSH_AUTH_SOCK", ssh_agent["SSH_AUTH_SOCK"])
    with sshd(tmp_path, {"root": [accepted]}) as server:
        with connect(server, tmp_path, key[0]) as t:
            assert t.run("true").rc == 0


# ---- jump hosts and ssh_config ---------------------------------------------------------------


def test_a_chain_of_two_jump_hosts_is_taken_in_order_with_every_host_key_verified(tmp_path, key):
    users = {"root": [key[1]], "jumper": [key[1]]}
    with sshd(tmp_path, users) as a, sshd(tmp_path, users) as b, sshd(tmp_path, users) as gw:
        known = tmp_path / "known_hosts"
        known.write_text(a.known_line() + b.known_line() + gw.known_line())
        jump = (f"jumper@127.0.0.1:{a.port}", f"jumper@127.0.0.1:{b.port}")
        with connect(gw, tmp_path, key[0], known=known, jump=jump) as t:
            assert t.run("echo hi").stdout == "hi\n" and t.hops == 3
        assert a.forwarded == [("127.0.0.1", b.port)] and b.forwarded == [("127.0.0.1", gw.port)]
        assert (a.connections, b.connections, gw.connections) == (1, 1, 1)
        known.write_text(a.known_line() + gw.known_line())  # b, the second hop, is unknown
        message = fails(
            Transport(
                Target(
                    "gw1",
                    "127.0.0.1",
                    gw.port,
                    "root",
                    key[0],
                    known,
                    jump=jump,
                    ssh_config=tmp_path / "no-ssh-config",
                    timeout=5,
                )
            )
        )
    assert message.startswith(f"jump host 2 (jumper@127.0.0.1:{b.port}): unknown host key")
    assert message.endswith(f"(via jump host 1 (jumper@127.0.0.1:{a.port}))")


def test_jump_failures_name_their_hop(tmp_path, key):
    with sshd(tmp_path, {"jumper": [key[1]]}) as bastion, sshd(tmp_path, {"root": [key[1]]}) as gw:
        known = tmp_path / "known_hosts"
        known.write_text(bastion.known_line() + gw.known_line())
        target_ = Target(
            "gw1",
            "127.0.0.1",
            gw.port,
            "root",
            key[0],
            known,
            ssh_config=tmp_path / "none",
            timeout=5,
            jump=(f"nobody@127.0.0.1:{bastion.port}",),
        )
        (tmp_path / "none").touch()
        assert fails(target_).startswith(
            f"jump host 1 (nobody@127.0.0.1:{bastion.port}): authentication failed"
        )
        closed = gw.port
    with sshd(tmp_path, {"jumper": [key[1]]}) as bastion:
        known.write_text(bastion.known_line())
        target_ = Target(
            "gw1",
            "127.0.0.1",
            closed,
            "root",
            key[0],
            known,
            ssh_config=tmp_path / "none",
            timeout=5,
            jump=(f"jumper@127.0.0.1:{bastion.port}",),
        )
        message = fails(target_)
    assert message.startswith(f"root@127.0.0.1:{closed}: unreachable from the jump host")
    assert message.endswith(f"(via jump host 1 (jumper@127.0.0.1:{bastion.port}))")


def test_a_forward_from_the_jump_host_is_opened_by_the_jump_host_not_the_host(tmp_path, key):
    """What health's front probe uses: the stream's source is the bastion, as with ssh -J."""
    with (
        sshd(tmp_path, {"jumper": [key[1]]}) as bastion,
        sshd(tmp_path, {"root": [key[1]]}) as gw,
        socket.create_server(("127.0.0.1", 0)) as listener,
    ):
        port = listener.getsockname()[1]
        (tmp_path / "known_hosts").write_text(bastion.known_line() + gw.known_line())
        with connect(gw, tmp_path, key[0], jump=(f"jumper@127.0.0.1:{bastion.port}",)) as t:
            assert (t.jumps, t.last_jump) == (1, f"jump host 1 (jumper@127.0.0.1:{bastion.port})")
            with t.forward_from_jump("127.0.0.1", port) as local:
                listener.settimeout(5)
                peer, _ = listener.accept()
                with peer:
                    local.sendall(b"ping")
                    peer.settimeout(5)
                    assert peer.recv(4) == b"ping"
        assert ("127.0.0.1", port) in bastion.forwarded and ("127.0.0.1", port) not in gw.forwarded
        with pytest.raises(SshError, match="not connected through the jump host"):
            t.forward_from_jump("127.0.0.1", port)  # closed: one line, no IndexError
        with connect(gw, tmp_path, key[0]) as direct:
            assert (direct.jumps, direct.last_jump) == (0, None)
            with pytest.raises(SshError, match="gw1: not reached through a jump host"):
                direct.forward_from_jump("127.0.0.1", port)


def test_a_jump_channel_that_hangs_gives_up_after_the_timeout(tmp_path, key):
    with (
        sshd(tmp_path, {"jumper": [key[1]]}, forward_delay=4) as bastion,
        sshd(tmp_path, {"root": [key[1]]}) as gw,
    ):
        known = tmp_path / "known_hosts"
        known.write_text(bastion.known_line() + gw.known_line())
        (tmp_path / "none").touch()
        target_ = Target("gw1", "127.0.0.1", gw.port, "root", key[0], known, ssh_config=tmp_path / "none",
                         timeout=1, jump=(f"jumper@127.0.0.1:{bastion.port}",))  # fmt: skip
        message = fails(target_)
    assert message == (
        f"root@127.0.0.1:{gw.port}: unreachable from the jump host: timed out "
        f"(via jump host 1 (jumper@127.0.0.1:{bastion.port}))"
    )


def test_ssh_config_aliases_user_port_identity_proxyjump_known_hosts_and_keepalive(tmp_path, key):
    with sshd(tmp_path, {"jumper": [key[1]]}) as bastion, sshd(tmp_path, {"admin": [key[1]]}) as gw:
        known = tmp_path / "kh"
        known.write_text(bastion.known_line() + gw.known_line())
        config = tmp_path / "ssh_config"
        config.write_text(f"""
Host bastion
    HostName 127.0.0.1
    Port {bastion.port}
    User jumper
Host gw-lab
    HostName 127.0.0.1
    Port {gw.port}
    User admin
    ProxyJump bastion
Host *
    IdentityFile {key[0]}
    UserKnownHostsFile {known}
    ServerAliveInterval 7
""")
        with Transport(Target("gw1", "gw-lab", ssh_config=config, timeout=5)) as t:
            assert t.run("echo hi").stdout == "hi\n"
            assert t.login_user == "admin" and t.hops == 2
            assert t._ssh().packetizer._Packetizer__keepalive_interval == 7
        assert bastion.forwarded == [("127.0.0.1", gw.port)]


def test_the_inventory_wins_over_ssh_config_and_the_command_line_over_both(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host 127.0.0.1\n    User fromconfig\n    Port 2200\n    ProxyJump j1,j2\n")
    inv = _inventory(tmp_path, {"port": 2201})
    t = target(inv, "gw1", opts=SshOptions(ssh_config=config))
    assert (t.user, t.port, t.jump, t.known_hosts) == (None, 2201, None, None)  # None: ssh_config decides
    inv = _inventory(tmp_path, {"user": "admin", "jump": ["a@h1", "h2:2022"]})
    t = target(inv, "gw1", opts=SshOptions(user="ops", private_key=tmp_path / "k", timeout=3))
    assert (t.user, t.jump, t.key, t.timeout) == ("ops", ("a@h1", "h2:2022"), tmp_path / "k", 3)


def _inventory(tmp_path: Path, ssh: dict):
    from ibgw_provision import inventory

    raw = yaml.safe_load((INVENTORIES / "local.yml").read_text())
    raw["hosts"] = {"gw1": raw["hosts"]["local"] | {"ssh": ssh}}
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(raw))
    return inventory.load(path)


def test_the_command_line_reports_an_ssh_failure_in_one_line_and_never_echoes_the_become_password(tmp_path):
    from click.testing import CliRunner

    from ibgw_provision.cli import main

    with sshd(tmp_path, {}) as server:
        closed = server.port
    _inventory(tmp_path, {"port": closed, "known_hosts": str(tmp_path / "kh")})
    (tmp_path / "none").touch()
    result = CliRunner().invoke(
        main,
        [
            "provision",
            "gw1",
            "-i",
            str(tmp_path / "inv.yml"),
            "--timeout",
            "2",
            "--ssh-config",
            str(tmp_path / "none"),
            "--user",
            "admin",
            "-K",
            "--forks",
            "2",
        ],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 1, result.output
    assert f"[gw1] UNREACHABLE: admin@127.0.0.1:{closed}: unreachable: " in result.output
    assert "Traceback" not in result.output and PASSWORD not in result.output


def test_a_passphrase_key_without_a_terminal_or_passphrase_fails_in_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ibgw_provision.cli import main

    locked = tmp_path / "id_locked"
    new_key(locked, passphrase="open sesame")
    monkeypatch.delenv("IBGW_SSH_PASSPHRASE", raising=False)
    _inventory(tmp_path, {"key": str(locked), "port": 9, "known_hosts": str(tmp_path / "kh")})
    (tmp_path / "none").touch()
    args = ["provision", "gw1", "-i", str(tmp_path / "inv.yml"), "--ssh-config", str(tmp_path / "none")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert (
        f"[gw1] UNREACHABLE: SSH key {locked} is protected by a passphrase: set IBGW_SSH_PASSPHRASE or "
        "ssh.passphrase (no terminal to ask on)\n"
    ) in result.output
