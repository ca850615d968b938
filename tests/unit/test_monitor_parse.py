"""Who is connected, by app: HAProxy stick-table rows mapped to apps by their CIDRs, the gate's
per-app figures preferred when the gate runs; and one monitor stream end to end over SSH."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest

from ibgw_provision import inventory
from ibgw_provision.observe import monitor
from ibgw_provision.observe.monitor import Source
from ibgw_provision.provision import layout

from .sshkit import TIMEOUT, running_sshd

NOW = 1_800_000_000.0

INVENTORY = """
hosts:
  gw:
    address: 127.0.0.1
    ssh: {{user: root, port: {ssh_port}, key: {key}, known_hosts: {known_hosts}}}
    backend: simulator
    front: {{kind: haproxy, bind: 127.0.0.1, gate: {gate}}}
    firewall: {{enabled: false}}
    gateways:
      - {{mode: paper, api_port: 14002, front_port: 14004, gate_port: 14006,
          gate_metrics_port: {paper_metrics}}}
      - {{mode: live, api_port: 14001, front_port: 14003, gate_port: 14005,
          gate_metrics_port: {live_metrics}}}
    apps:
      - {{name: algo, client_id: 1, modes: [paper, live], sources: [10.0.1.0/24, "2001:db8::/32"]}}
      - {{name: research, client_id: 2, modes: [paper], sources: [10.0.1.6/32], read_only: true}}
      - {{name: ops, client_id: 3, modes: [live], sources: [192.0.2.0/24]}}
"""


def load(
    tmp_path: Path,
    gate: bool = True,
    ssh_port: int = 22,
    key: str = "id",
    known_hosts: str = "kh",
    paper_metrics: int = 14008,
    live_metrics: int = 14007,
) -> inventory.Inventory:
    path = tmp_path / "inventory.yml"
    path.write_text(
        INVENTORY.format(
            gate=str(gate).lower(),
            ssh_port=ssh_port,
            key=key,
            known_hosts=known_hosts,
            paper_metrics=paper_metrics,
            live_metrics=live_metrics,
        )
    )
    return inventory.load(path)


@pytest.fixture
def host(tmp_path):
    return load(tmp_path).hosts["gw"]


def row(key: str, conn_cur: int = 0, exp: int = 0, **counters) -> dict:
    return {"key": key, "use": conn_cur, "exp": exp, "conn_cur": conn_cur, **counters}


def test_owners_are_every_app_of_the_mode_whose_cidrs_hold_the_address(host):
    assert monitor.owners(host, "paper", "10.0.1.6") == ("algo", "research")  # overlapping CIDRs: both
    assert monitor.owners(host, "live", "10.0.1.6") == ("algo",)  # research has no live access
    assert monitor.owners(host, "live", "192.0.2.44") == ("ops",)
    assert monitor.owners(host, "paper", "192.0.2.44") == ()  # ops is live only
    assert monitor.owners(host, "paper", "2001:db8::7") == ("algo",)
    assert monitor.owners(host, "paper", "10.0.2.1") == ()


def test_sources_map_rows_to_apps_and_order_owned_first(host):
    tables = {
        "live": [
            row("203.0.113.9", conn_cnt=4),
            row("::ffff:192.0.2.10", 2, conn_cnt=2, bytes_in_cnt=10, bytes_out_cnt=20),
        ],
        "paper": [row("10.0.1.6", 1, conn_cnt=1), row("2001:db8::5", exp=86_000_000)],
    }
    found = monitor.sources(host, tables, NOW)
    assert found == [
        Source("live", "192.0.2.10", ("ops",), 2, 2, 10, 20, NOW),  # IPv4-mapped: shown as IPv4
        Source("live", "203.0.113.9", (), 0, 4, 0, 0, NOW - layout.STICK_EXPIRE_S),  # nobody's: last
        Source("paper", "2001:db8::5", ("algo",), 0, 0, 0, 0, NOW - (layout.STICK_EXPIRE_S - 86_000)),
        Source("paper", "10.0.1.6", ("algo", "research"), 1, 1, 0, 0, NOW),
    ]


def test_last_seen_is_now_while_connected_else_when_the_entry_was_last_refreshed(host):
    (idle,) = monitor.sources(
        host, {"paper": [row("10.0.1.9", exp=layout.STICK_EXPIRE_S * 1000 - 60_000)]}, NOW
    )
    assert idle.last_seen == NOW - 60  # expiry restarts at each connection: a minute ago
    (busy,) = monitor.sources(host, {"paper": [row("10.0.1.9", 3, exp=5)]}, NOW)
    assert busy.last_seen == NOW and busy.connections == 3


def test_a_key_that_is_not_an_address_is_refused(host):
    with pytest.raises(ValueError):
        monitor.sources(host, {"paper": [row("not-an-ip")]}, NOW)


def test_app_states_prefer_the_gate_and_fall_back_to_the_front(host):
    found = monitor.sources(
        host, {"paper": [row("10.0.1.6", 1)], "live": [row("192.0.2.3", exp=86_390_000)]}, NOW
    )
    gates = {
        "live": {"algo": {"connected": 1.0, "last_seen": NOW - 5, "messages_in": 12.0, "messages_out": 30.0}},
        "paper": None,
    }  # the paper gate is down
    states = {(s["app"], s["mode"]): s for s in monitor.app_states(host, found, gates)}
    assert list(states) == [("algo", "paper"), ("algo", "live"), ("research", "paper"), ("ops", "live")]
    assert states[("algo", "live")] == {
        "app": "algo",
        "client_id": 1,
        "mode": "live",
        "sources": ["10.0.1.0/24", "2001:db8::/32"],
        "read_only": False,
        "seen_by": "gate",
        "connected": True,
        "last_seen": NOW - 5,
        "messages_in": 12,
        "messages_out": 30,
    }
    assert states[("algo", "paper")] == {
        "app": "algo",
        "client_id": 1,
        "mode": "paper",
        "sources": ["10.0.1.0/24", "2001:db8::/32"],
        "read_only": False,
        "seen_by": "front",
        "connected": True,
        "last_seen": NOW,
    }
    assert states[("research", "paper")]["read_only"] is True and states[("research", "paper")]["connected"]
    assert states[("ops", "live")] == {
        "app": "ops",
        "client_id": 3,
        "mode": "live",
        "sources": ["192.0.2.0/24"],
        "read_only": False,
        "seen_by": "front",
        "connected": False,
        "last_seen": NOW - 10,
    }


def test_an_app_never_seen_has_no_last_seen(host):
    states = list(monitor.app_states(host, [], {}))
    assert len(states) == 4 and all(s["last_seen"] is None and not s["connected"] for s in states)
    gate_says_gone = {"paper": {"research": {"connected": 0.0}}}
    (research,) = [s for s in monitor.app_states(host, [], gate_says_gone) if s["app"] == "research"]
    assert (research["seen_by"], research["connected"]) == ("gate", False)
    assert (research["messages_in"], research["messages_out"], research["last_seen"]) == (0, 0, None)


def test_as_dicts_stamps_each_source():
    found = [Source("live", "192.0.2.10", ("ops",), 1, 2, 3, 4, NOW)]
    (out,) = monitor.as_dicts(found)
    assert out == {
        "mode": "live",
        "address": "192.0.2.10",
        "apps": ("ops",),
        "connections": 1,
        "total": 2,
        "bytes_in": 3,
        "bytes_out": 4,
        "last_seen": NOW,
        "at": out["at"],
    }
    assert abs(out["at"] - time.time()) < 60


# ---- one stream, end to end ------------------------------------------------------

TABLES = {
    "paper": b"# table: paper, type: ip, size:102400, used:1\n"
    b"0x5581: key=10.0.1.6 use=1 exp=86399000 shard=0 conn_cnt=1 conn_cur=1 bytes_in_cnt=5 "
    b"bytes_out_cnt=6\n\n",
    "live": b"# table: live, type: ip, size:102400, used:0\n\n",
}


@pytest.fixture
def haproxy_socket(tmp_path, monkeypatch):
    """HAProxy's runtime API where the agent looks for it, answering `show table`."""
    path = tmp_path / "admin.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    server.settimeout(TIMEOUT)

    def serve():
        for _ in range(100):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                table = conn.recv(1024).decode().removeprefix("show table ").strip()
                conn.sendall(TABLES.get(table, b"No such table\n"))

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setattr(layout, "HAPROXY_SOCKET", str(path))
    yield path
    server.close()


@pytest.fixture
def live_gate():
    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(
                b'ibgw_gate_app_connected{mode="live",app="ops"} 1\n'
                b'ibgw_gate_app_messages_out_total{mode="live",app="ops"} 9\n'
            )

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_samples_stream_over_one_ssh_command(tmp_path, haproxy_socket, live_gate, monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    with running_sshd(tmp_path) as sshd:
        known = tmp_path / "known_hosts"
        known.write_text(sshd.known_line())
        inv = load(
            tmp_path,
            ssh_port=sshd.port,
            key=str(sshd.client_key),
            known_hosts=str(known),
            paper_metrics=free_port(),
            live_metrics=live_gate,
        )
        got = []
        monitor.samples(inv, "gw", 2, lambda found, gates: got.append((found, gates)))
    assert len(got) == 2
    found, gates = got[0]
    assert [(s.mode, s.address, s.apps, s.connections) for s in found] == [
        ("paper", "10.0.1.6", ("algo", "research"), 1)
    ]
    assert gates == {"paper": None, "live": {"ops": {"connected": 1.0, "messages_out": 9.0}}}
    states = {(s["app"], s["mode"]): s for s in monitor.app_states(inv.hosts["gw"], found, gates)}
    assert (
        states[("ops", "live")]["seen_by"] == "gate" and states[("research", "paper")]["seen_by"] == "front"
    )
