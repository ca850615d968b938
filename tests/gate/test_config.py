"""The gate config contract: what provisioning renders loads, and the rules that span fields."""

import tempfile
import time
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ibgw_provision import inventory
from ibgw_provision.errors import InputError
from ibgw_provision.gate.config import load
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision.render import render_host

from ..kit.gate import config_data, write_config

RENDERED = sorted((Path(__file__).resolve().parent.parent / "golden").glob("*/etc/ibgw/gate-*.yml"))


@pytest.mark.parametrize("path", RENDERED, ids=lambda p: f"{p.parts[-4]}/{p.name}")
def test_rendered_configs_load(path):
    config = load(path)
    assert config.mode in path.name and config.front_socket and config.listen and config.apps


def test_defaults_and_normalisation(short_dir):
    data = config_data(short_dir, 4002)
    del data["handshake_timeout"], data["metrics"]
    data["apps"] = [data["apps"][2] | {"allowed_sec_types": ["stk", "Opt"]}]
    config = load(write_config(short_dir / "gate.yml", data))
    assert (config.handshake_timeout, config.max_frame, config.client_buffer, config.metrics) == (
        5,
        0xFFFFFF,  # ibapi's MAX_MSG_LEN: the largest payload a client or the gateway accepts
        1048576,
        None,
    )
    assert (config.lobby.per_source, config.lobby.total, config.lobby.max_frame) == (8, 256, 4096)
    [app] = config.apps
    assert (app.allowed_sec_types, app.max_order_quantity) == (["STK", "OPT"], Decimal(5))
    assert app.allows(ip_address("127.1.2.3")) and not app.allows(ip_address("10.0.0.1"))


def test_each_problem_names_its_line_and_field(short_dir):
    path = short_dir / "gate.yml"
    path.write_text(
        "mode: paper\nlisten: {host: 127.0.0.1, port: 1}\nupstream: {host: h, port: 0}\n"
        "front_socket: {path: s}\naudit_db: a\nadmin_socket: b\napps:\n"
        "  - {name: x, client_id: -1, sources: [10.0.0.300/32], read_only: false, color: red}\n"
    )
    with pytest.raises(InputError) as caught:
        load(path)
    problems = sorted(str(p).split(": ", 1)[1] for p in caught.value.problems)
    assert problems == [
        "apps[0].client_id: Input should be greater than or equal to 0",
        "apps[0].color: unknown field (check its spelling)",
        "apps[0].sources[0]: malformed CIDR '10.0.0.300/32': '10.0.0.300/32' does not appear to be "
        "an IPv4 or IPv6 network",
        "upstream.port: Input should be greater than or equal to 1",
    ]
    assert {str(p).split(":")[1] for p in caught.value.problems} == {"3", "8"}


LOCAL = Path(__file__).resolve().parent.parent.parent / "inventories" / "local.yml"
ODD = [None, 0, -1, 1, 2.5, 1e-300, 1e308, 10_000, 10_001, 1_000_001, True, "5", float("inf"), float("nan")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            name: st.sampled_from(ODD)
            for name in (
                "max_cash_quantity",
                "max_notional_per_order",
                "max_orders_per_minute",
                "max_open_orders",
            )
        }
        | {
            "allow_settings": st.sampled_from([True, False, None, "yes"]),
            "allow_global_cancel": st.sampled_from([True, False, None, 1]),
            "read_only": st.booleans(),
            "max_order_quantity": st.sampled_from([None, 1, 2.5, 1e308]),
        },
    )
)
def test_every_accepted_inventory_renders_a_gate_config_the_gate_loads(fields):
    data = yaml.safe_load(LOCAL.read_text())
    [host] = data["hosts"].values()
    host["apps"][0].update(fields)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "inv.yml"
        path.write_text(yaml.safe_dump(data))
        try:
            inv = inventory.load(path)
        except InputError:
            return  # refused with a clear error: nothing is rendered
        [name] = inv.hosts
        files = [
            f
            for f in render_host(inv, name, Secrets(masked=True))
            if "/gate-" in f.path and f.path.endswith(".yml")
        ]
        assert files
        for managed in files:
            rendered = Path(directory) / "gate.yml"
            rendered.write_text(managed.content)
            config = load(rendered)
            app = next(a for a in config.apps if a.name == host["apps"][0]["name"])
            for key, value in fields.items():
                if (
                    key in ("max_orders_per_minute", "max_open_orders", "allow_settings")
                    and value is not None
                ):
                    assert getattr(app, key) == value


def _load_time(directory: Path, count: int) -> float:
    apps = [
        {"name": f"app{i}", "client_id": i, "sources": ["10.0.0.0/8"], "read_only": i % 2 == 0}
        for i in range(1, count + 1)
    ]
    path = write_config(directory / f"gate-{count}.yml", config_data(directory, 4002, apps=apps))
    started = time.monotonic()
    assert len(load(path).apps_by_client_id) == count
    return time.monotonic() - started


def test_sixty_thousand_apps_load_in_linear_time(short_dir):
    """Loading is linear in the number of apps (it was quadratic: 60,000 apps took over a minute).
    Ten times the apps may take at most twenty times as long; a quadratic load takes a hundred."""
    small, large = _load_time(short_dir, 6_000), _load_time(short_dir, 60_000)
    assert large < 20 * small + 1.0, (small, large)
    assert large < 120  # a bound, not a measurement: the loaded shared machine is slow


def test_a_probe_only_app_must_be_read_only(short_dir):
    data = config_data(short_dir, 4002)
    data["apps"] = [data["apps"][0] | {"read_only": False, "probe_only": True}]
    with pytest.raises(InputError) as caught:
        load(write_config(short_dir / "gate.yml", data))
    assert "a probe_only app must be read_only" in str(caught.value.problems[0])
    data["apps"] = [data["apps"][0] | {"read_only": True}]
    assert load(write_config(short_dir / "gate.yml", data)).apps[0].probe_only
