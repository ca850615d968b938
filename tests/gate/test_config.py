"""The gate config contract: what provisioning renders loads, and the rules that span fields."""

from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path

import pytest

from ibgw_provision.errors import InputError
from ibgw_provision.gate.config import load

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
