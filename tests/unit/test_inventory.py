"""The inventory model: what loads, and one bad inventory per validation rule."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ibgw_provision import inventory
from ibgw_provision.cli import main
from ibgw_provision.errors import InputError
from ibgw_provision.inventory import preflight, secrets

BASE = textwrap.dedent("""\
    hosts:
      gw:
        address: 192.0.2.1
        backend: simulator
        firewall:
          admin_cidrs: [192.0.2.100/32]
        gateways:
          - mode: paper
          - mode: live
        apps:
          - name: bot
            client_id: 1
            modes: [paper]
            sources: [10.0.0.0/24]
          - name: research
            client_id: 2
            modes: [paper, live]
            sources: [10.0.1.5/32]
    """)

ARTIFACTS = textwrap.dedent("""\
    artifacts:
      ib_gateway: {version: "10.30.1t", file: gw.sh, sha256: "%s"}
      ibc: {version: "3.20.0", file: ibc.zip, sha256: "%s"}
    """) % ("a" * 64, "b" * 64)

# (case id, text to replace in BASE, replacement, field, text on the expected line, message fragment)
BAD = [
    (
        "duplicate-client-id",
        "client_id: 2",
        "client_id: 1",
        "hosts.gw.apps[1].client_id",
        "client_id: 1\n        modes: [paper, live]",
        "client_id 1 is already used by app 'bot' on the paper gateway",
    ),
    (
        "port-collision",
        "      - mode: live\n",
        "      - mode: live\n        api_port: 4004\n",
        "hosts.gw.gateways[1].api_port",
        "api_port: 4004",
        "port 4004 collides with gateways[0].front_port",
    ),
    (
        "port-collides-with-ssh",
        "      - mode: live\n",
        "      - mode: live\n        front_port: 22\n",
        "hosts.gw.gateways[1].front_port",
        "front_port: 22",
        "collides with ssh.port",
    ),
    (
        "unknown-mode",
        "- mode: paper",
        "- mode: papr",
        "hosts.gw.gateways[0].mode",
        "mode: papr",
        "'paper' or 'live'",
    ),
    (
        "unknown-app-mode",
        "modes: [paper]",
        "modes: [paper, demo]",
        "hosts.gw.apps[0].modes[1]",
        "modes: [paper, demo]",
        "'paper' or 'live'",
    ),
    (
        "malformed-cidr",
        "10.0.0.0/24",
        "10.0.0.300/24",
        "hosts.gw.apps[0].sources[0]",
        "sources: [10.0.0.300/24]",
        "malformed CIDR '10.0.0.300/24'",
    ),
    (
        "cidr-host-bits",
        "10.0.1.5/32",
        "10.0.1.5/24",
        "hosts.gw.apps[1].sources[0]",
        "sources: [10.0.1.5/24]",
        "has host bits set",
    ),
    (
        "malformed-admin-cidr",
        "192.0.2.100/32",
        "192.0.2.100/33",
        "hosts.gw.firewall.admin_cidrs[0]",
        "admin_cidrs:",
        "malformed CIDR",
    ),
    (
        "mode-without-gateway",
        "      - mode: live\n",
        "",
        "hosts.gw.apps[1].modes[1]",
        "modes: [paper, live]",
        "no live gateway on this host",
    ),
    (
        "plaintext-password",
        "      - mode: paper\n",
        "      - mode: paper\n        login: {username: {env: IB_USER}, password: hunter2}\n",
        "hosts.gw.gateways[0].login.password",
        "login:",
        "plaintext secrets are not allowed",
    ),
    (
        "plaintext-password-key",
        "      - mode: paper\n",
        "      - mode: paper\n        password: hunter2\n",
        "hosts.gw.gateways[0].password",
        "password: hunter2",
        "plaintext secrets are not allowed",
    ),
    (
        "secret-ref-both",
        "      - mode: paper\n",
        "      - mode: paper\n        login: {username: {env: U}, password: {env: P, file: /x}}\n",
        "hosts.gw.gateways[0].login.password",
        "login:",
        "exactly one of 'env' or 'file'",
    ),
    (
        "missing-secret-reference",
        "backend: simulator",
        "backend: ibgw",
        "hosts.gw.gateways[0].login",
        "- mode: paper",
        "missing secret reference",
    ),
    ("bad-yaml", "    apps:\n", "    apps: [\n", "", "- name: bot", "bad YAML"),
    (
        "duplicate-key",
        "    backend: simulator\n",
        "    backend: simulator\n    backend: ibgw\n",
        "hosts.gw.backend",
        "backend: ibgw",
        "duplicate key",
    ),
    (
        "unknown-field",
        "client_id: 2",
        "clientid: 2",
        "hosts.gw.apps[1].clientid",
        "clientid: 2",
        "unknown field",
    ),
    (
        "firewall-without-admin",
        "admin_cidrs: [192.0.2.100/32]",
        "admin_cidrs: []",
        "hosts.gw.firewall.admin_cidrs",
        "admin_cidrs: []",
        "no admin CIDR may reach SSH",
    ),
    (
        "duplicate-gateway",
        "      - mode: live\n",
        "      - mode: paper\n        api_port: 5002\n        front_port: 5004\n",
        "hosts.gw.gateways[1].mode",
        "- mode: paper\n        api_port: 5002",
        "a paper gateway is already defined",
    ),
    (
        "duplicate-app-name",
        "name: research",
        "name: bot",
        "hosts.gw.apps[1].name",
        "name: bot\n        client_id: 2",
        "already used by apps[0]",
    ),
    (
        "paper-with-live-account",
        "      - mode: paper\n",
        "      - mode: paper\n        simulator: {accounts: [U123]}\n",
        "hosts.gw.gateways[0].simulator.accounts[0]",
        "accounts: [U123]",
        "must start with 'DU'",
    ),
    (
        "bad-front-bind",
        "    firewall:\n",
        "    front: {bind: example.com}\n    firewall:\n",
        "hosts.gw.front.bind",
        "front: {bind: example.com}",
        "bind must be an IP address",
    ),
    (
        "port-out-of-range",
        "      - mode: live\n",
        "      - mode: live\n        api_port: 70000\n",
        "hosts.gw.gateways[1].api_port",
        "api_port: 70000",
        "less than or equal to 65535",
    ),
    (
        "unknown-group-member",
        "hosts:\n",
        "groups: {prod: [gw, gw9]}\nhosts:\n",
        "groups.prod[1]",
        "groups:",
        "no host named 'gw9'",
    ),
    (
        "probe-client-id-taken",
        "client_id: 2",
        "client_id: 9999",
        "hosts.gw.apps[1].client_id",
        "client_id: 9999",
        "reserved for `ibgw health`'s probe",
    ),
    (
        "front-probe-client-id-taken",
        "client_id: 2",
        "client_id: 9998",
        "hosts.gw.apps[1].client_id",
        "client_id: 9998",
        "reserved for `ibgw health`'s probe",
    ),
    (
        "master-client-id-is-the-probe",
        "      - mode: live\n",
        "      - mode: live\n        ibc: {master_client_id: 9999}\n",
        "hosts.gw.gateways[1].ibc.master_client_id",
        "ibc: {master_client_id: 9999}",
        "a master client id receives every app's orders",
    ),
    (
        "port-collides-with-metrics",
        "      - mode: live\n",
        "      - mode: live\n        front_port: 8405\n",
        "hosts.gw.gateways[1].front_port",
        "front_port: 8405",
        "collides with front.metrics_port",
    ),
    *(
        (
            f"gate-{field}-{value}",
            "        sources: [10.0.1.5/32]\n",
            f"        sources: [10.0.1.5/32]\n        {field}: {value}\n",
            f"hosts.gw.apps[1].{field}",
            f"{field}: {value}",
            fragment,
        )
        for field, value, fragment in (
            ("max_cash_quantity", ".inf", "finite number"),
            ("max_notional_per_order", "0", "greater than 0"),
            ("max_orders_per_minute", "2.5", "valid integer"),
            ("max_open_orders", "10001", "less than or equal to 10000"),
            ("allow_settings", "maybe", "valid boolean"),
        )
    ),
    (
        "read-only-with-allow-settings",
        "        sources: [10.0.1.5/32]\n",
        "        sources: [10.0.1.5/32]\n        read_only: true\n        allow_settings: true\n",
        "hosts.gw.apps[1]",
        "- name: research",
        "a read_only app cannot have allow_settings",
    ),
    (
        "bad-restart-time",
        "      - mode: paper\n",
        "      - mode: paper\n        ibc: {auto_restart_time: '23:59'}\n",
        "hosts.gw.gateways[0].ibc.auto_restart_time",
        "auto_restart_time",
        "should match pattern",
    ),
]


def _line_of(text: str, marker: str) -> int:
    return text[: text.index(marker)].count("\n") + 1


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_inventory_names_field_and_line(tmp_path, case):
    _, old, new, field, marker, fragment = case
    assert old in BASE, "the case must change the base inventory"
    text = BASE.replace(old, new, 1)
    path = tmp_path / "inv.yml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        inventory.load(path)
    problem = next((p for p in err.value.problems if p.field == field), err.value.problems[0])
    assert (problem.file, problem.field) == (str(path), field)
    assert problem.line == _line_of(text, marker)
    assert fragment in problem.message


def test_base_and_shipped_inventories_are_valid(tmp_path, example, local):
    path = tmp_path / "inv.yml"
    path.write_text(BASE)
    inv = inventory.load(path)
    assert [g.api_port for g in inv.hosts["gw"].gateways] == [4002, 4001]
    assert [g.front_port for g in inv.hosts["gw"].gateways] == [4004, 4003]
    assert [a.client_id for a in example.hosts["gw1"].apps] == [1, 2, 3]
    assert {g.mode for g in example.hosts["gw1"].gateways} == {"paper", "live"}
    assert local.hosts["local"].backend == "simulator"


def test_ibgw_backend_needs_pinned_artifacts(tmp_path):
    login = "login: {username: {env: U}, password: {env: P}}"
    text = BASE.replace("backend: simulator", "backend: ibgw")
    text = text.replace("- mode: paper\n", f"- mode: paper\n        {login}\n")
    text = text.replace("- mode: live\n", f"- mode: live\n        {login}\n")
    path = tmp_path / "inv.yml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        inventory.load(path)
    assert [p.field for p in err.value.problems] == ["artifacts.ib_gateway", "artifacts.ibc"]
    path.write_text(ARTIFACTS + text)
    assert inventory.load(path).artifacts.ibc.version == "3.20.0"


def test_preflight_refuses_a_missing_or_unpinned_installer(tmp_path):
    login = "login: {username: {env: U}, password: {env: P}}"
    text = ARTIFACTS + BASE.replace("backend: simulator", "backend: ibgw").replace(
        "- mode: paper\n", f"- mode: paper\n        {login}\n"
    ).replace("- mode: live\n", f"- mode: live\n        {login}\n")
    path = tmp_path / "inv.yml"
    text = text.replace("artifacts:\n", f"artifacts:\n  cache_dir: {tmp_path}\n")
    path.write_text(text)
    (tmp_path / "ibc.zip").write_bytes(b"not the pinned one")
    inv = inventory.load(path)
    with pytest.raises(InputError) as err:
        preflight.check_artifacts(inv, ["gw"])
    ibc, gateway = err.value.problems  # one problem per file, though both gateways need gw.sh
    assert (ibc.field, gateway.field) == ("artifacts.ibc.sha256", "artifacts.ib_gateway")
    assert "not the pinned one: refusing to install it" in ibc.message and "cannot read" in gateway.message
    assert ibc.line == next(n for n, line in enumerate(text.splitlines(), 1) if 'sha256: "bbb' in line)


def test_same_client_id_on_different_gateways_is_fine(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        BASE.replace("modes: [paper, live]", "modes: [live]").replace("client_id: 2", "client_id: 1")
    )
    assert len(inventory.load(path).hosts["gw"].apps) == 2


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(BASE.replace("10.0.0.0/24", "nope").replace("10.0.1.5/32", "nope/2"))
    with pytest.raises(InputError) as err:
        inventory.load(path)
    assert [p.field for p in err.value.problems] == [
        "hosts.gw.apps[0].sources[0]",
        "hosts.gw.apps[1].sources[0]",
    ]


def test_select_hosts_by_name_group_glob_and_all(example):
    assert example.select("all") == ["gw1"]
    assert example.select("prod") == ["gw1"]
    assert example.select("gw*") == ["gw1"]
    assert example.select("nope") == []


class TestSecretReferences:
    def _inventory(self, tmp_path, password_ref: str):
        text = BASE.replace(
            "- mode: paper\n",
            f"- mode: paper\n        login: {{username: {{env: IBGW_T_USER}}, password: {password_ref}}}\n",
        )
        path = tmp_path / "inv.yml"
        path.write_text(text)
        return inventory.load(path), text

    def test_unset_env_var_is_named_with_its_line(self, tmp_path, monkeypatch):
        monkeypatch.setenv("IBGW_T_USER", "someone")
        monkeypatch.delenv("IBGW_T_PASS", raising=False)
        inv, text = self._inventory(tmp_path, "{env: IBGW_T_PASS}")
        with pytest.raises(InputError) as err:
            secrets.check(inv)
        problem = err.value.problems[0]
        assert problem.field == "hosts.gw.gateways[0].login.password"
        assert problem.line == _line_of(text, "login:")
        assert "IBGW_T_PASS is not set" in problem.message

    def test_world_readable_secret_file_is_refused(self, tmp_path, monkeypatch):
        monkeypatch.setenv("IBGW_T_USER", "someone")
        secret = tmp_path / "pw"
        secret.write_text("s3cret-value\n")
        secret.chmod(0o644)
        inv, _ = self._inventory(tmp_path, f"{{file: {secret}}}")
        with pytest.raises(InputError) as err:
            secrets.check(inv)
        assert "readable by others" in err.value.problems[0].message
        assert "s3cret-value" not in str(err.value)
        secret.chmod(0o600)
        secrets.check(inv)

    def test_a_secret_with_a_line_break_is_refused(self, tmp_path, monkeypatch):
        monkeypatch.setenv("IBGW_T_USER", "someone")
        monkeypatch.setenv("IBGW_T_PASS", "pw\nReadOnlyApi=no")
        inv, _ = self._inventory(tmp_path, "{env: IBGW_T_PASS}")
        with pytest.raises(InputError) as err:
            secrets.check(inv)
        assert "holds a line break" in err.value.problems[0].message
        assert "ReadOnlyApi" not in str(err.value)

    def test_resolved_values_are_masked(self, tmp_path, monkeypatch):
        monkeypatch.setenv("IBGW_T_USER", "someone")
        monkeypatch.setenv("IBGW_T_PASS", "p4ss-w0rd")
        inv, _ = self._inventory(tmp_path, "{env: IBGW_T_PASS}")
        resolver = secrets.Secrets()
        assert resolver.value(inv.hosts["gw"].gateways[0].login.password) == "p4ss-w0rd"
        assert resolver.mask("IbPassword=p4ss-w0rd\n") == f"IbPassword={secrets.MASK}\n"
        assert secrets.Secrets(masked=True).value(inv.hosts["gw"].gateways[0].login.password) == secrets.MASK


class TestCli:
    def test_bad_inventory_exits_2_with_file_line_field(self, tmp_path):
        path = tmp_path / "inv.yml"
        path.write_text(BASE.replace("client_id: 2", "client_id: 1"))
        result = CliRunner().invoke(main, ["validate", "-i", str(path)])
        assert result.exit_code == 2
        assert f"{path}:16: hosts.gw.apps[1].client_id: client_id 1 is already used" in result.output

    def test_no_traceback_from_the_real_command(self, tmp_path):
        path = tmp_path / "inv.yml"
        path.write_text("hosts: [\n")
        proc = subprocess.run(
            [sys.executable, "-m", "ibgw_provision", "validate", "-i", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert f"{path}:2: bad YAML" in proc.stderr

    def test_missing_file_exits_2(self, tmp_path):
        result = CliRunner().invoke(main, ["validate", "-i", str(tmp_path / "nope.yml")])
        assert result.exit_code == 2
        assert "cannot read" in result.output

    def test_valid_inventory_exits_0(self):
        result = CliRunner().invoke(main, ["validate", "-i", "inventories/example.yml"])
        assert result.exit_code == 0, result.output

    def test_render_unknown_host_exits_2(self, tmp_path):
        result = CliRunner().invoke(
            main, ["render", "nope", "-i", "inventories/example.yml", "--out", str(tmp_path)]
        )
        assert result.exit_code == 2
        assert "no host named 'nope'" in result.output


def test_the_readme_inventory_reference_is_a_valid_inventory(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Inventory reference", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "reference.yml"
    path.write_text(block.replace('sha256: "…"', f'sha256: "{"0" * 64}"'))
    inv = inventory.load(path)
    assert inv.hosts["gw1"].apps[0].name == "smart-lean-0dte"


def test_warns_of_what_only_the_gate_would_enforce(example):
    assert inventory.warnings(example) == []
    host = example.hosts["gw1"]
    direct = host.model_copy(update={"front": host.front.model_copy(update={"gate": False})})
    (warning,) = inventory.warnings(example.model_copy(update={"hosts": {"gw1": direct}}))
    assert "apps[1] (python-research): read_only is enforced only by `ibgw gate`" in warning
