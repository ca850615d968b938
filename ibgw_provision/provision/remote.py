"""Run the agent on a host over SSH: one request on stdin, its events and result back as JSON lines.

As root the agent runs directly; as another login user through sudo: `sudo -n`, or with
the become password (`-K`) `sudo -S -p ''`, which reads the password as the first line of
stdin. The password is never in argv, and never in a message.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..inventory.model import Inventory
from ..inventory.secrets import SecretError, Secrets
from .platforms import SUPPORTED
from .transport import SshError, Target, Transport

AGENT = (Path(__file__).parent / "agent.py").read_bytes()
HEADER = b"IBGW-AGENT "  # then the agent's length; lines before it (an unused sudo password) are skipped
# Reads the agent's source, then runs it; the request follows on stdin. No argv payload.
BOOT = (
    "python3 -c 'import sys;b=sys.stdin.buffer;h=b.readline()\n"
    'while h and not h.startswith(b"IBGW-AGENT "):h=b.readline()\n'
    'exec(compile(b.read(int(h[11:] or 0)),"ibgw-agent","exec"))\''
)
REFUSED = re.compile(r"^Please login as the user", re.I)  # cloud images' forced command for root
ROOT_REFUSED_EXIT = 142
SUDO_WRONG = re.compile(r"incorrect password attempt|Sorry, try again", re.I)
SUDO_NEEDS_PASSWORD = re.compile(r"a password is required|a terminal is required", re.I)


# A host without python3: install it with apt, or name the OS that has no apt (exit 3).
INSTALL_PYTHON = (
    "sh -c 'if ! command -v apt-get >/dev/null; then [ -r /etc/os-release ] && . /etc/os-release; "
    'echo "${PRETTY_NAME:-unknown (no /etc/os-release)}" >&2; exit 3; fi; apt-get update -qq && '
    "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq python3 >/dev/null'"
)


class AgentError(Exception):
    pass


class _Refused(Exception):
    """The host's forced command answered instead of our command."""


@dataclass(frozen=True)
class SshOptions:
    """What the command line adds to, or overrides in, each host's `ssh:` settings."""

    user: str | None = None
    private_key: Path | None = None
    timeout: float | None = None
    ssh_config: Path | None = None
    accept_new: bool = False
    become_password: str | None = field(default=None, repr=False)
    ask_passphrase: Callable[[Path], str] | None = field(default=None, repr=False, compare=False)


def target(inv: Inventory, name: str, accept_new: bool = False, opts: SshOptions | None = None) -> Target:
    """The host's connection settings: the command line, then the inventory's explicit `ssh:` keys,
    then ssh_config, then defaults."""
    opts = opts or SshOptions()
    host = inv.hosts[name]
    ssh = host.ssh
    explicit = ssh.model_fields_set
    key = opts.private_key or (inv.path(ssh.key) if ssh.key else None)
    known = inv.path(ssh.known_hosts) if "known_hosts" in explicit else None
    jump = ssh.jumps() if ssh.jump is not None else None
    return Target(
        name,
        host.address,
        ssh.port if "port" in explicit else None,
        opts.user or (ssh.user if "user" in explicit else None),
        key,
        known,
        opts.accept_new or accept_new or ssh.host_key == "accept-new",
        jump,
        opts.ssh_config,
        _passphrase(inv, name, opts.ask_passphrase),
        opts.become_password,
        opts.timeout or 15,
    )


def _passphrase(inv: Inventory, name: str, ask: Callable[[Path], str] | None) -> Callable[[Path], str]:
    """A key's passphrase: ssh.passphrase (a secret reference), else IBGW_SSH_PASSPHRASE, else a prompt."""
    ref = inv.hosts[name].ssh.passphrase

    def passphrase(path: Path) -> str:
        if ref is not None:
            try:
                return Secrets().value(ref)
            except SecretError as exc:
                raise SshError(f"{name}: ssh.passphrase: {exc}") from None
        if os.environ.get("IBGW_SSH_PASSPHRASE"):
            return os.environ["IBGW_SSH_PASSPHRASE"]
        if ask is None:
            raise SshError(
                f"SSH key {path} is protected by a passphrase: set IBGW_SSH_PASSPHRASE or "
                "ssh.passphrase, or run on a terminal"
            )
        return ask(path)

    return passphrase


def as_root(transport: Transport, command: str) -> tuple[str, bytes]:
    """The command line, and what must precede its stdin, to run `command` as root."""
    t = transport.target
    if transport.login_user == "root":
        return command, b""
    if t.become_password is not None:
        return "sudo -S -p '' " + command, t.become_password.encode() + b"\n"
    return "sudo -n " + command, b""


def agent_stdin(request: Mapping[str, Any]) -> bytes:
    """What BOOT reads: the header with the agent's length, the agent, then the request."""
    return HEADER + f"{len(AGENT)}\n".encode() + AGENT + json.dumps(request).encode()


def agent_stream(transport: Transport, request: dict) -> socket.socket:
    """Run the agent with one request whose answer is a byte stream (op relay): a socket joined to it."""
    command, prefix = as_root(transport, BOOT)
    return transport.stream(command, prefix + agent_stdin(request) + b"\n")


def call_agent(transport: Transport, request: Mapping[str, Any], on_event=lambda message: None) -> dict:
    """Run the agent on the host with one request; return its result. on_event sees what comes before."""
    name = transport.target.name
    result: dict = {}
    said: list[str] = []  # what is not ours on stdout: a forced command's message

    def on_line(line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            said.append(line)
            if REFUSED.search(line):
                raise _Refused from None  # cloud-init's forced command then sleeps 10 s: do not wait
            return
        if not isinstance(message, dict):
            said.append(line)
        elif "result" in message:
            result["value"] = message["result"]
        else:
            on_event(message)

    command, prefix = as_root(transport, BOOT)
    stdin = prefix + agent_stdin(request)
    try:
        proc = transport.run(command, stdin, on_line=on_line)
        if proc.rc == 127 and not result:  # a minimal Debian has no python3 yet
            _install_python(transport)
            proc = transport.run(command, stdin, on_line=on_line)
    except _Refused:
        raise AgentError(_refused(name, said, "")) from None
    if proc.rc == ROOT_REFUSED_EXIT and not result:
        raise AgentError(_refused(name, said, proc.stderr))
    if proc.rc != 0 or "value" not in result:
        raise AgentError(f"{name}: {_failure(transport, proc.rc, proc.stderr)}")
    return result["value"]


def _install_python(transport: Transport) -> None:
    command, prefix = as_root(transport, INSTALL_PYTHON)
    boot = transport.run(command, prefix)
    if boot.rc == 3:
        raise AgentError(f"unsupported OS: {boot.stderr.strip()[-200:]} (ibgw supports {SUPPORTED})")
    if boot.rc != 0:
        raise AgentError(
            f"{transport.target.name}: cannot install python3: {_failure(transport, boot.rc, boot.stderr)}"
        )


def _refused(name: str, said: list[str], stderr: str) -> str:
    message = " ".join(line.strip() for line in said + stderr.splitlines() if line.strip())
    return (
        f"{name}: root login refused by the host: {message or '(no message)'}; set ssh.user in the inventory"
    )


def _failure(transport: Transport, rc: int, stderr: str) -> str:
    """One line: sudo's refusal in words, else the agent's exit and the end of its stderr."""
    password = transport.target.become_password
    if password:
        stderr = stderr.replace(password, "********")
    if transport.login_user != "root" and rc == 1:
        if SUDO_WRONG.search(stderr):
            return f"sudo refused the password given with -K for {transport.login_user}"
        if SUDO_NEEDS_PASSWORD.search(stderr):
            return (
                f"sudo needs a password for {transport.login_user}: pass -K (--ask-become-pass), "
                "or allow it NOPASSWD"
            )
    text = " ".join(stderr.strip().splitlines()[-5:])[-500:]
    return f"agent failed (exit {rc}): {text}"
