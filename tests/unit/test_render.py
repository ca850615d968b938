"""Rendered files: they carry exactly what the inventory says, and match the goldens."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from ibgw_provision import inventory
from ibgw_provision.inventory.model import Pki as PkiDir
from ibgw_provision.inventory.secrets import MASK, Secrets
from ibgw_provision.pki.ca import Pki
from ibgw_provision.provision import layout
from ibgw_provision.provision.render import render_host
from tests.conftest import INVENTORIES

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def _expected_allow(host) -> dict[str, set[str]]:
    """Each front's allowlist: its apps' CIDRs, and with a gate the admin CIDRs (health's probe)."""
    admin = set(host.firewall.admin_cidrs) if host.front.gate else set()
    return {gw.mode: {c for a in host.apps_for(gw.mode) for c in a.sources} | admin for gw in host.gateways}


def _haproxy_sections(text: str) -> dict[str, str]:
    """'frontend paper' -> its body."""
    parts = re.split(r"^(frontend \S+|backend \S+)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


@pytest.mark.parametrize("variant,host_name", [("example", "gw1"), ("local", "local")])
def test_haproxy_allowlist_and_ports_match_inventory(rendered, example, local, variant, host_name):
    host = {"example": example, "local": local}[variant].hosts[host_name]
    sections = _haproxy_sections(rendered[variant]["/etc/haproxy/haproxy.cfg"].read_text())
    for gw in host.gateways:
        front = sections[f"frontend {gw.mode}"]
        assert f"bind {host.front.bind}:{gw.front_port}\n" in front
        acl = re.search(r"acl app_source src (.+)", front).group(1).split()
        assert set(acl) == _expected_allow(host)[gw.mode]
        assert "tcp-request connection reject if !app_source" in front
        assert f"sc0_conn_cur gt {host.front.per_source_limit}" in front
        upstream = (
            f"unix@{layout.gate_front_socket(gw.mode)}" if host.front.gate else f"127.0.0.1:{gw.api_port}"
        )
        assert f"server {gw.mode} {upstream} " in sections[f"backend {gw.mode}_gateway"]


def _only_paper_apps(example, gate: bool) -> dict:
    host = example.hosts["gw1"]
    apps = [a.model_copy(update={"modes": ["paper"]}) for a in host.apps]
    front = host.front.model_copy(update={"gate": gate})
    inv = example.model_copy(
        update={"hosts": {"gw1": host.model_copy(update={"apps": apps, "front": front})}}
    )
    return {f.path: f.content for f in render_host(inv, "gw1", Secrets(masked=True))}


def test_a_gateway_no_app_may_use_rejects_everyone_without_a_gate(example):
    files = _only_paper_apps(example, gate=False)
    live = _haproxy_sections(files["/etc/haproxy/haproxy.cfg"])["frontend live"]
    assert "acl app_source" not in live
    assert re.search(r"^\s+tcp-request connection reject$", live, flags=re.M)
    assert "live_apps" not in files[f"{layout.ETC}/firewall.nft"]


def test_with_a_gate_a_gateway_no_app_may_use_admits_the_admin_cidrs_alone(example):
    files = _only_paper_apps(example, gate=True)
    live = _haproxy_sections(files["/etc/haproxy/haproxy.cfg"])["frontend live"]
    assert re.search(r"acl app_source src 198\.51\.100\.7/32\n", live)
    assert "live_apps_v4" in files[f"{layout.ETC}/firewall.nft"]


def test_nginx_allowlist_and_ports_match_inventory(rendered, example):
    host = example.hosts["gw1"]
    text = rendered["example-nginx"]["/etc/nginx/nginx.conf"].read_text()
    assert not re.search(r"^\s*(http \{|proxy_pass http)", text, flags=re.M)
    assert re.search(r"^stream \{", text, flags=re.M)
    for gw in host.gateways:
        server = re.search(rf"listen {host.front.bind}:{gw.front_port};(.*?)\}}", text, flags=re.S).group(1)
        assert set(re.findall(r"allow (\S+);", server)) == _expected_allow(host)[gw.mode]
        assert server.rstrip().endswith(f"proxy_pass {gw.mode}_gateway;")
        assert "deny all;" in server
        target = (
            f"unix:{layout.gate_front_socket(gw.mode)}" if host.front.gate else f"127.0.0.1:{gw.api_port}"
        )
        assert f"server {target} " in text


def test_firewall_admits_only_what_the_inventory_allows(rendered, example):
    host = example.hosts["gw1"]
    text = rendered["example"][f"{layout.ETC}/firewall.nft"].read_text()
    sets = {
        name: {e.strip() for e in body.split(",")}
        for name, body in re.findall(r"set (\S+) \{.*?elements = \{ (.*?) \}", text, flags=re.S)
    }
    rules = re.findall(r"ip6? saddr @(\S+) tcp dport (\d+) accept", text)
    assert ("admin_v4", str(host.ssh.port)) in rules
    assert sets["admin_v4"] == set(host.firewall.admin_cidrs)
    for gw in host.gateways:
        assert (f"{gw.mode}_apps_v4", str(gw.front_port)) in rules
        assert sets[f"{gw.mode}_apps_v4"] == _expected_allow(host)[gw.mode]
    assert len(rules) == 1 + len(host.gateways)
    assert "policy drop" in text
    for gw in host.gateways:
        assert f"dport {gw.api_port}" not in text


def test_ipv6_sources_get_their_own_sets(tmp_path, example):
    host = example.hosts["gw1"]
    apps = [host.apps[0].model_copy(update={"sources": ["2001:db8::/64", "10.0.1.5/32"]})] + host.apps[1:]
    inv = example.model_copy(update={"hosts": {"gw1": host.model_copy(update={"apps": apps})}})
    text = {f.path: f for f in render_host(inv, "gw1", Secrets(masked=True))}[
        f"{layout.ETC}/firewall.nft"
    ].content
    assert "ip6 saddr @paper_apps_v6 tcp dport 4004 accept" in text
    assert re.search(r"set paper_apps_v6 \{\s+type ipv6_addr", text)


def test_ibc_config_per_mode(rendered, example):
    for gw in example.hosts["gw1"].gateways:
        ini = rendered["example"][layout.ibc_ini(gw.mode)].read_text()
        assert f"TradingMode={gw.mode}\n" in ini
        assert f"OverrideTwsApiPort={gw.api_port}\n" in ini
        assert f"ReadOnlyApi={'yes' if gw.ibc.read_only_api else 'no'}\n" in ini
        assert f"AutoRestartTime={gw.ibc.auto_restart_time}\n" in ini
        assert f"ExistingSessionDetectedAction={gw.ibc.existing_session_detected_action}\n" in ini
        assert "CommandServerPort=0\n" in ini
        assert f"IbPassword={MASK}\n" in ini
        jts = rendered["example"][f"{layout.settings_dir(gw.mode)}/jts.ini"].read_text()
        assert "TrustedIPs=127.0.0.1\n" in jts


def test_secret_files_are_private_to_ibkr_and_hold_real_values_only_when_provisioning(
    example, monkeypatch, tmp_path
):
    monkeypatch.setenv("IB_PAPER_USER", "paperuser")
    monkeypatch.setenv("IB_PAPER_PASSWORD", "pp-secret")
    monkeypatch.setenv("IB_LIVE_USER", "liveuser")
    monkeypatch.setattr("ibgw_provision.inventory.secrets._read", lambda ref: f"value-of-{ref.env or 'file'}")
    ca = Pki(tmp_path / "pki")
    ca.init("example")
    ca.issue_server("gw1", example.hosts["gw1"].address)
    example = example.model_copy(update={"pki": PkiDir(dir=ca.dir)})
    resolver = Secrets()
    files = render_host(example, "gw1", resolver)
    secret_files = [f for f in files if f.secret]
    tls_key = layout.TLS_FILES["key"]
    assert {f.path for f in secret_files} == {layout.ibc_ini("paper"), layout.ibc_ini("live"), tls_key}
    for f in secret_files:  # the gate (user ibkr) reads the TLS key through its group
        expected = (0o640, "root", "ibkr") if f.path == tls_key else (0o600, "ibkr", "ibkr")
        assert (f.mode, f.owner, f.group) == expected
        assert MASK not in f.content
        assert MASK in resolver.mask(f.content)
    by_path = {f.path: f for f in files}
    assert by_path[tls_key].content == (ca.server_dir("gw1") / "key.pem").read_text()
    assert by_path[layout.TLS_FILES["crl"]].content == ca.crl.read_text()
    for kind in ("ca", "crl", "cert", "key"):  # a new CRL reloads the gates, it does not restart them
        assert by_path[layout.TLS_FILES[kind]].reload == ("ibgw-gate-paper.service", "ibgw-gate-live.service")
        assert by_path[layout.TLS_FILES[kind]].restart == ()
    for f in files:
        if not f.secret:
            assert "value-of-" not in f.content, f.path


def test_gateway_units(rendered, example, local):
    for gw in local.hosts["local"].gateways:
        unit = rendered["local"][f"{layout.UNIT_DIR}/{layout.gateway_unit(gw.mode)}"].read_text()
        assert f"ibgw sim --listen 127.0.0.1:{gw.api_port} --mode {gw.mode}" in unit
        assert f"User={layout.USER}\n" in unit
    for gw in example.hosts["gw1"].gateways:
        unit = rendered["example"][f"{layout.UNIT_DIR}/{layout.gateway_unit(gw.mode)}"].read_text()
        assert re.search(r"ExecStart=\S+/scripts/ibcstart\.sh 1037 --gateway --mode=" + gw.mode, unit)
        assert f"--on2fatimeout={gw.ibc.twofa_timeout_action}" in unit
        assert f"Requires={layout.xvfb_unit(gw.mode)}" in unit
        for hardening in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "StartLimitBurst=",
        ):
            assert hardening in unit


def test_java_heap_per_gateway(rendered, example):
    for gw in example.hosts["gw1"].gateways:
        path = next(p for p in rendered["example"] if p.startswith(f"{layout.OPT}/gateway-{gw.mode}/"))
        assert rendered["example"][path].read_text().startswith(f"-Xmx{gw.java_heap}\n")


def test_displays_are_distinct(rendered):
    displays = [
        re.search(r"Xvfb :(\d+)", p.read_text()).group(1)
        for path, p in rendered["example"].items()
        if "ibgw-xvfb-" in path
    ]
    assert len(displays) == 2 and len(set(displays)) == 2


@pytest.mark.parametrize(
    "variant", ["example", "example-nginx", "example-direct", "example-nginx-direct", "local", "lab"]
)
def test_golden(rendered, variant):
    """Any change to a rendered file must be deliberate: IBGW_UPDATE_GOLDEN=1 rewrites them."""
    root = GOLDEN / variant
    if os.environ.get("IBGW_UPDATE_GOLDEN"):
        for path, file in rendered[variant].items():
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_text(file.read_text())
    golden = {"/" + str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert golden == set(rendered[variant]), "rendered file set differs from the goldens"
    for path, file in rendered[variant].items():
        assert file.read_text() == (root / path.lstrip("/")).read_text(), path


def test_with_the_gate_the_front_sends_proxy_v2_to_it(rendered, example):
    host = example.hosts["gw1"]
    sections = _haproxy_sections(rendered["example"]["/etc/haproxy/haproxy.cfg"].read_text())
    nginx = rendered["example-nginx"]["/etc/nginx/nginx.conf"].read_text()
    for gw in host.gateways:
        backend = sections[f"backend {gw.mode}_gateway"]
        socket = layout.gate_front_socket(gw.mode)
        assert f"server {gw.mode} unix@{socket} send-proxy-v2 check check-send-proxy" in backend
        assert f"server unix:{socket} " in nginx
        config = yaml.safe_load(rendered["example"][layout.gate_config(gw.mode)].read_text())
        assert config["upstream"] == {"host": "127.0.0.1", "port": gw.api_port}
        assert config["listen"] == {"host": "127.0.0.1", "port": gw.gate_port}
        assert config["front_socket"] == {"path": socket}
        apps = {a["name"]: a for a in config["apps"]}
        assert apps.keys() == {a.name for a in host.apps_for(gw.mode)} | {"ibgw-health"}
        assert apps["python-research"]["read_only"] and not apps["smart-lean-0dte"]["read_only"]
        assert apps["ibgw-health"] | {"sources": None} == {
            "name": "ibgw-health",
            "client_id": host.health.probe_client_id + 1,
            "read_only": True,
            "probe_only": True,
            "sources": None,
            "max_order_quantity": None,
            "allowed_sec_types": None,
        }
    assert nginx.count("proxy_protocol on;") == len(host.gateways)


def test_overlapping_app_cidrs_are_collapsed_in_the_firewall_sets():
    """nft -c refuses a set with overlapping intervals: an app's /32 inside another app's /28."""
    from types import SimpleNamespace

    from ibgw_provision.provision.render import firewall_rules

    host = SimpleNamespace(
        ssh=SimpleNamespace(port=22),
        firewall=SimpleNamespace(admin_cidrs=["198.18.0.2/32"]),
        front=SimpleNamespace(gate=False),  # no probe CIDRs on the front: its apps alone
        gateways=[SimpleNamespace(mode="paper", front_port=4004)],
    )
    apps = {
        "paper": [
            SimpleNamespace(sources=s) for s in (["198.18.1.2/32"], ["198.18.1.0/28", "2001:db8::1/128"])
        ]
    }
    rules = {r["set"]: r["cidrs"] for r in firewall_rules(host, apps)}
    assert rules == {
        "admin_v4": ["198.18.0.2/32"],
        "paper_apps_v4": ["198.18.1.0/28"],
        "paper_apps_v6": ["2001:db8::1/128"],
    }


def _lo_users(inv, host: str, login_user: str | None) -> list[str]:
    """Who may open the gateways' API ports on lo, as the firewall's output rule names them."""
    (nft,) = [f for f in render_host(inv, host, Secrets(masked=True), login_user) if f.path.endswith(".nft")]
    return re.search(r"meta skuid != \{ (.*?) \} reject", nft.content).group(1).split(", ")


@pytest.mark.parametrize(
    "login_user,expected",
    [
        (None, ["root", "ibkr", "admin"]),  # no connection (`ibgw render`): the inventory's ssh.user
        ("opsuser", ["root", "ibkr", "opsuser"]),  # --user or ssh_config's User: who really logged in
        ("root", ["root", "ibkr"]),
        ("ibkr", ["root", "ibkr"]),
    ],
)
def test_the_firewalls_lo_rule_names_the_user_the_run_logged_in_as(login_user, expected):
    lab = inventory.load(INVENTORIES / "lab.yml")  # ssh.user: admin
    assert _lo_users(lab, "gw", login_user) == expected
