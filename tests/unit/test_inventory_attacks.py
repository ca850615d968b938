"""Hostile and odd inventories: each is refused by `ibgw validate` with one clear line and exit 2.

Found by an attack run (issue 13): inventories that validated but deleted /opt/ibgw, crash-looped a
gate, grew without bound, crashed with a traceback, or were silently read as something else.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ibgw_provision import inventory
from ibgw_provision.cli import main
from ibgw_provision.constrained import MODES
from ibgw_provision.errors import InputError
from ibgw_provision.gate import config as gate_config
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import layout
from ibgw_provision.provision.render import render_host

BASE = textwrap.dedent("""\
    artifacts:
      ib_gateway: {version: "10.30.1t", file: gw.sh, sha256: "%s"}
      ibc: {version: "3.20.0", file: ibc.zip, sha256: "%s"}
    hosts:
      gw:
        address: 192.0.2.1
        ssh: {user: root}
        backend: ibgw
        front: {gate: true}
        firewall:
          admin_cidrs: [192.0.2.100/32]
        gateways:
          - mode: paper
            login: {username: {env: U}, password: {env: P}}
            java_heap: 768m
        apps:
          - name: bot
            client_id: 1
            modes: [paper]
            sources: [10.0.0.0/24]
            max_order_quantity: 100
            allowed_sec_types: [STK]
    """) % ("a" * 64, "b" * 64)


def refused(path: Path) -> str:
    """Run `ibgw validate`: exit 2, exactly one line on stderr, never a traceback. That line."""
    result = CliRunner().invoke(main, ["validate", "-i", str(path)])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {path}:")
    return line


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inv.yml"
    path.write_text(text)
    return path


def test_the_base_inventory_is_valid_and_its_gate_config_loads(tmp_path):
    inv = inventory.load(write(tmp_path, BASE))
    assert _gate_configs(inv) == ["paper"]


# (id, text in BASE, its replacement, field, fragment of the message)
BAD = [
    # 9: `..` or `.` as a version is a directory name under /opt/ibgw that provisioning deletes.
    ("ibc-version-dotdot", '"3.20.0"', '".."', "artifacts.ibc.version", "should match pattern"),
    ("ibc-version-dot", '"3.20.0"', '"."', "artifacts.ibc.version", "should match pattern"),
    ("gateway-version-dotdot", '"10.30.1t"', '".."', "artifacts.ib_gateway.version", "should match pattern"),
    ("version-with-slash", '"3.20.0"', '"3/../.."', "artifacts.ibc.version", "should match pattern"),
    ("artifact-file-dotdot", "file: ibc.zip", "file: ..", "artifacts.ibc.file", "should match pattern"),
    (
        "artifact-file-path",
        "file: gw.sh",
        "file: ../gw.sh",
        "artifacts.ib_gateway.file",
        "should match pattern",
    ),
    # 10: what the gate refuses to load, so its unit would crash-loop.
    (
        "no-sec-types",
        "allowed_sec_types: [STK]",
        "allowed_sec_types: []",
        "hosts.gw.apps[0].allowed_sec_types",
        "list at least one security type",
    ),
    (
        "infinite-quantity",
        "max_order_quantity: 100",
        "max_order_quantity: .inf",
        "hosts.gw.apps[0].max_order_quantity",
        "finite number",
    ),
    (
        "nan-quantity",
        "max_order_quantity: 100",
        "max_order_quantity: .nan",
        "hosts.gw.apps[0].max_order_quantity",
        "finite number",
    ),
    (
        "app-named-like-the-probe",
        "name: bot",
        "name: ibgw-health",
        "hosts.gw.apps[0].name",
        "`ibgw health`'s probe",
    ),
    # 19 and client ids: accepted, but read as something else.
    ("client-id-true", "client_id: 1", "client_id: true", "hosts.gw.apps[0].client_id", "valid integer"),
    ("client-id-string", "client_id: 1", "client_id: '1'", "hosts.gw.apps[0].client_id", "valid integer"),
    ("client-id-2-63", "client_id: 1", f"client_id: {2**63}", "hosts.gw.apps[0].client_id", "2147483647"),
    ("client-id-2-31", "client_id: 1", f"client_id: {2**31}", "hosts.gw.apps[0].client_id", "2147483647"),
    (
        "client-id-negative",
        "client_id: 1",
        "client_id: -1",
        "hosts.gw.apps[0].client_id",
        "greater than or equal to 0",
    ),
    (
        "read-only-one",
        "modes: [paper]",
        "modes: [paper]\n        read_only: 1",
        "hosts.gw.apps[0].read_only",
        "valid boolean",
    ),
    (
        "port-true",
        "java_heap: 768m",
        "java_heap: 768m\n        api_port: true",
        "hosts.gw.gateways[0].api_port",
        "valid integer",
    ),
    (
        "ipv4-mapped-cidr",
        "10.0.0.0/24",
        "'::ffff:10.0.1.5/128'",
        "hosts.gw.apps[0].sources[0]",
        "IPv4-mapped IPv6 network, which no IPv4 client matches; write 10.0.1.5/32",
    ),
    (
        "ipv4-mapped-admin-cidr",
        "192.0.2.100/32",
        "'::ffff:192.0.2.0/120'",
        "hosts.gw.firewall.admin_cidrs[0]",
        "write 192.0.2.0/24",
    ),
    ("heap-zero", "java_heap: 768m", "java_heap: 0m", "hosts.gw.gateways[0].java_heap", "a JVM size"),
    (
        "heap-too-small",
        "java_heap: 768m",
        "java_heap: 64m",
        "hosts.gw.gateways[0].java_heap",
        "between 256m and 64g",
    ),
    (
        "heap-too-large",
        "java_heap: 768m",
        "java_heap: 65g",
        "hosts.gw.gateways[0].java_heap",
        "between 256m and 64g",
    ),
    (
        "heap-too-many-digits",
        "java_heap: 768m",
        "java_heap: 99999999g",
        "hosts.gw.gateways[0].java_heap",
        "a JVM size",
    ),
    ("heap-bad-unit", "java_heap: 768m", "java_heap: 1x", "hosts.gw.gateways[0].java_heap", "a JVM size"),
    (
        "ssh-user-newline",
        "ssh: {user: root}",
        'ssh: {user: "root\\nProxyCommand x"}',
        "hosts.gw.ssh.user",
        "should match pattern",
    ),
    (
        "ssh-user-option",
        "ssh: {user: root}",
        "ssh: {user: -oProxyCommand=x}",
        "hosts.gw.ssh.user",
        "should match pattern",
    ),
    (
        "secret-file-nul",
        "password: {env: P}",
        'password: {file: "pw\\0x"}',
        "hosts.gw.gateways[0].login.password.file",
        "control characters",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_refused_with_one_line_naming_the_field(tmp_path, case):
    _, old, new, field, fragment = case
    assert old in BASE, "the case must change the base inventory"
    text = BASE.replace(old, new, 1)
    path = write(tmp_path, text)
    line = refused(path)
    assert f": {field}: " in line and fragment in line, line
    marker = new.split("\n")[-1].strip()
    assert line.startswith(f"error: {path}:{text[: text.index(marker)].count(chr(10)) + 1}: "), line


def test_accepted_sizes_and_versions(tmp_path):
    text = BASE.replace("java_heap: 768m", "java_heap: 2G").replace('"3.20.0"', '"3.20.0-beta_1"')
    inv = inventory.load(write(tmp_path, text))
    assert (inv.hosts["gw"].gateways[0].java_heap, inv.artifacts.ibc.version) == ("2G", "3.20.0-beta_1")


# ---- YAML itself: bounded, and never a traceback -------------------------------------------------


def test_nul_character_names_file_and_line(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_bytes(b"hosts:\n  gw:\n    address: a\x00b\n")
    assert (
        refused(path)
        == f"error: {path}:3: bad YAML: unacceptable character #x0000 (special characters are not allowed)"
    )


@pytest.mark.parametrize(
    "opening,closing", [("[", "]"), ("{a: ", "}"), ("- ", "")], ids=["flow-list", "flow-map", "block"]
)
def test_deep_nesting_is_refused(tmp_path, opening, closing):
    if opening == "- ":
        body = "".join(f"{'  ' * i}- \n" for i in range(5000)) + "  " * 5000 + "x\n"
    else:
        body = opening * 5000 + closing * 5000 + "\n"
    line = refused(write(tmp_path, "hosts: " + body if opening != "- " else "hosts:\n" + body))
    assert "nested deeper than 64 levels" in line


LAUGHS = (
    'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "hosts: *i\n"
)
MERGE_LAUGHS = (
    "m0: &m0 {a: 1}\n"
    + "".join(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 4)}], k{i}: 1}}\n" for i in range(1, 14))
    + "hosts: *m13\n"
)


def bounded(*args: str) -> list[str]:
    """The real command, with a memory limit so that an unbounded load fails here and not the machine:
    exit 2 and no traceback. Its stderr lines."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    proc = subprocess.run(
        [sys.executable, "-m", "ibgw_provision", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-2000:])
    return proc.stderr.splitlines()


def test_billion_laughs_fails_fast_with_one_line(tmp_path):
    assert len(LAUGHS) < 1600  # 9**9 'lol's once expanded
    path = write(tmp_path, LAUGHS)
    assert bounded("validate", "-i", str(path)) == [
        f"error: {path}:10: hosts: more than 100000 values once aliases are expanded"
    ]


@pytest.mark.parametrize(
    "text,line",
    [
        (MERGE_LAUGHS, "15: hosts: more than 100000 values once aliases are expanded"),
        ("a: &a [*a]\nhosts: *a\n", "2: hosts: nested deeper than 64 levels once aliases are expanded"),
    ],
    ids=["merge-key-laughs", "recursive-alias"],
)
def test_alias_bombs_fail_fast_with_one_line(tmp_path, text, line):
    path = write(tmp_path, text)
    assert bounded("validate", "-i", str(path)) == [f"error: {path}:{line}"]


def test_the_gate_config_loader_is_bounded_too(tmp_path):
    path = write(tmp_path, LAUGHS.replace("hosts:", "apps:"))
    assert bounded("gate", "--config", str(path)) == [
        f"error: {path}:10: apps: more than {gate_config.MAX_NODES} values once aliases are expanded"
    ]


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("? [a, b]\n: 1\n", "a key must be a plain value"),
        (BASE + '"gw\\n1\\u001b[31m": 1\n', r": gw\n1\x1b[31m: unknown field"),
        ("a: !!timestamp 2024-13-45\n", "bad YAML: month must be in 1..12"),
    ],
    ids=["complex-key", "control-characters-in-a-key", "bad-timestamp"],
)
def test_odd_yaml_is_one_clear_line(tmp_path, text, fragment):
    assert fragment in refused(write(tmp_path, text))


# ---- every inventory validate accepts renders gate configs the gate loads -------------------------

VALID = {
    "name": st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    "client_id": st.integers(0, 2**31 - 1),
    "modes": st.sampled_from([["paper"], ["live"], ["paper", "live"]]),
    "sources": st.lists(
        st.sampled_from(["10.0.0.0/24", "10.0.1.5/32", "2001:db8::/32", "::/0", "0.0.0.0/0"]),
        min_size=1,
        max_size=3,
    ),
    "read_only": st.booleans(),
    "max_order_quantity": st.one_of(
        st.none(), st.floats(min_value=1e-300, max_value=1e300), st.integers(1, 10**30)
    ),
    "allowed_sec_types": st.one_of(
        st.none(), st.lists(st.sampled_from(["STK", "OPT", "CASH", "CONTFUT"]), min_size=1, max_size=3)
    ),
}
ODD = {  # values an attacker or a typo might give each field
    "name": st.sampled_from(["ibgw-health", "x" * 63, "-bad", ""]),
    "client_id": st.sampled_from([-1, 9998, 9999, 2**31, 2**63, True, 1.0, "1"]),
    "sources": st.lists(
        st.sampled_from(["10.0.0.1/24", "::ffff:10.0.1.5/128", "::ffff:0:0/96", "::ffff:0:0/95"]), max_size=2
    ),
    "read_only": st.sampled_from([1, 0, "yes", None]),
    "max_order_quantity": st.one_of(st.floats(), st.sampled_from([-1, 0, True, "10", 5e-324, 10**400])),
    "allowed_sec_types": st.lists(st.sampled_from(["stk", "WARRANT", "X", "", "STK"]), max_size=2),
}


@st.composite
def app_lists(draw) -> list[dict]:
    """One to three valid apps, and often one odd value in one of them."""
    apps = draw(st.lists(st.fixed_dictionaries(VALID), min_size=1, max_size=3))
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(ODD)))
        draw(st.sampled_from(apps))[field] = draw(ODD[field])
    return apps


def _gate_configs(inv) -> list[str]:
    """Render the host's gate configs and load each with the gate's own loader; their modes."""
    with tempfile.TemporaryDirectory() as tmp:
        loaded = []
        for f in render_host(inv, "gw", Secrets(masked=True)):
            if f.path in {layout.gate_config(m) for m in MODES}:
                path = Path(tmp) / Path(f.path).name
                path.write_text(f.content)
                loaded.append(gate_config.load(path).mode)
        return loaded


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(apps=app_lists())
def test_every_accepted_inventory_renders_gate_configs_the_gate_loads(apps):
    data = yaml.safe_load(BASE)
    data["hosts"]["gw"]["gateways"].append(
        {"mode": "live", "login": {"username": {"env": "U"}, "password": {"env": "P"}}}
    )
    data["hosts"]["gw"]["apps"] = apps
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inv.yml"
        path.write_text(yaml.safe_dump(data))
        try:
            inv = inventory.load(path)
        except InputError:
            event("refused")
            return
    event("accepted")
    assert _gate_configs(inv) == ["paper", "live"]
