"""Where things live on a gateway host. One place, so render, plan and checks agree."""

from __future__ import annotations

USER = GROUP = "ibkr"
HOME = "/var/lib/ibgw"  # the ibkr user's home: gateway settings live below it
ETC = "/etc/ibgw"
LOG = "/var/log/ibgw"
OPT = "/opt/ibgw"
VENV = f"{OPT}/venv"  # ibgw itself, for the simulator backend
UNIT_DIR = "/etc/systemd/system"
FIREWALL_UNIT = "ibgw-firewall.service"
FIRST_DISPLAY = 101  # Xvfb displays :101, :102, ... one per gateway


def settings_dir(mode: str) -> str:
    """IB Gateway's settings (jts.ini, its own logs): writable by the gateway."""
    return f"{HOME}/{mode}"


def ibc_ini(mode: str) -> str:
    return f"{ETC}/{mode}/config.ini"


def log_dir(mode: str) -> str:
    return f"{LOG}/{mode}"


def gateway_unit(mode: str) -> str:
    return f"ibgw-gateway-{mode}.service"


def xvfb_unit(mode: str) -> str:
    return f"ibgw-xvfb-{mode}.service"


def ib_gateway_dir(version: str) -> str:
    return f"{OPT}/ibgateway/{version}"


def ibc_dir(version: str) -> str:
    return f"{OPT}/ibc/{version}"
