"""Run the agent on a host over SSH: one request on stdin, its events and result back as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from ..inventory.model import Inventory
from .platforms import SUPPORTED
from .transport import Target, Transport

AGENT = (Path(__file__).parent / "agent.py").read_bytes()
# Reads the agent's source, then runs it; the request follows on stdin. No argv payload.
BOOT = (
    "python3 -c 'import sys;b=sys.stdin.buffer;"
    'exec(compile(b.read(int(b.readline())),"ibgw-agent","exec"))\''
)


# A host without python3: install it with apt, or name the OS that has no apt (exit 3).
INSTALL_PYTHON = (
    "sh -c 'if ! command -v apt-get >/dev/null; then [ -r /etc/os-release ] && . /etc/os-release; "
    'echo "${PRETTY_NAME:-unknown (no /etc/os-release)}" >&2; exit 3; fi; apt-get update -qq && '
    "DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq python3 >/dev/null'"
)


class AgentError(Exception):
    pass


def target(inv: Inventory, name: str, accept_new: bool) -> Target:
    host = inv.hosts[name]
    ssh = host.ssh
    return Target(
        name,
        host.address,
        ssh.port,
        ssh.user,
        inv.path(ssh.key) if ssh.key else None,
        inv.path(ssh.known_hosts),
        accept_new or ssh.host_key == "accept-new",
    )


def call_agent(transport: Transport, request: dict, on_event=lambda message: None) -> dict:
    """Run the agent on the host with one request; return its result. on_event sees what comes before."""
    sudo = "" if transport.target.user == "root" else "sudo -n "
    stdin = f"{len(AGENT)}\n".encode() + AGENT + json.dumps(request).encode()
    result: dict = {}

    def on_line(line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if "result" in message:
            result["value"] = message["result"]
        else:
            on_event(message)

    proc = transport.run(sudo + BOOT, stdin, on_line=on_line)
    if proc.rc == 127 and not result:  # a minimal Debian has no python3 yet
        boot = transport.run(sudo + INSTALL_PYTHON)
        if boot.rc == 3:
            raise AgentError(f"unsupported OS: {boot.stderr.strip()[-200:]} (ibgw supports {SUPPORTED})")
        if boot.rc != 0:
            raise AgentError(f"{transport.target.name}: cannot install python3: {boot.stderr.strip()[-300:]}")
        proc = transport.run(sudo + BOOT, stdin, on_line=on_line)
    if proc.rc != 0 or "value" not in result:
        raise AgentError(
            f"{transport.target.name}: agent failed (exit {proc.rc}): {proc.stderr.strip()[-500:]}"
        )
    return result["value"]
