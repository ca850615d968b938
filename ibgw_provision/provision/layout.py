"""Where things live on a gateway host. One place, so render, plan and checks agree."""

from __future__ import annotations

import re

USER = GROUP = "ibkr"
# Groups USER is never in. agent.py, which runs alone on the host, keeps its own copy (a test checks).
PRIVILEGED_GROUPS = ("sudo", "adm", "wheel", "root")
HOME = "/var/lib/ibgw"  # the ibkr user's home: gateway settings live below it
ETC = "/etc/ibgw"
LOG = "/var/log/ibgw"
OPT = "/opt/ibgw"
VENV = f"{OPT}/venv"  # ibgw itself, for the simulator backend
WHEELS = f"{OPT}/wheels"  # the wheels it is installed from, shipped by the operator
VENV_STAMP = ".ibgw-wheels"  # in VENV: which wheels it was built from
INSTALL_STAMP = ".ibgw-installed"  # in an install dir: the sha256 of its installer
PENDING = f"{OPT}/.pending-systemd"  # root-only: unit actions owed by a run that failed before systemd
UPLOADS = f"{OPT}/uploads"  # installers, as shipped by the operator
UNIT_DIR = "/etc/systemd/system"
FIREWALL_UNIT = "ibgw-firewall.service"
HAPROXY_SOCKET = "/run/haproxy/admin.sock"  # runtime API, root only
STICK_EXPIRE_S = 86400  # how long the front remembers a source's counters
FIRST_DISPLAY = 101  # Xvfb displays :101, :102, ... one per gateway


DISPLAY_WAIT_S = 30  # how long a gateway waits for its Xvfb display


def x11_socket(display: int) -> str:
    """Xvfb's socket, in the private /tmp its unit shares with the gateway's."""
    return f"/tmp/.X11-unix/X{display}"


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


def tws_path(mode: str) -> str:
    """IBC's --tws-path for a gateway: each mode has its own install, for its own heap."""
    return f"{OPT}/gateway-{mode}"


def tws_version(version: str) -> str:
    """IB installs 10.30.1t under .../ibgateway/1030; ibcstart.sh takes that name."""
    match = re.match(r"^(\d+)\.(\d+)", version)
    return match.group(1) + match.group(2) if match else version


def ib_gateway_dir(mode: str, version: str) -> str:
    return f"{tws_path(mode)}/ibgateway/{tws_version(version)}"


def ibc_dir(version: str) -> str:
    return f"{OPT}/ibc/{version}"


GATE_STATE = f"{HOME}/gate"  # the gates' audit databases


def gate_unit(mode: str) -> str:
    return f"ibgw-gate-{mode}.service"


def gate_config(mode: str) -> str:
    return f"{ETC}/gate-{mode}.yml"


def gate_audit_db(mode: str) -> str:
    return f"{GATE_STATE}/{mode}.sqlite"


def gate_run_dir(mode: str) -> str:
    """The gate unit's RuntimeDirectory: its sockets."""
    return f"/run/ibgw-gate-{mode}"


def gate_admin_socket(mode: str) -> str:
    return f"{gate_run_dir(mode)}/gate.sock"


def gate_front_socket(mode: str) -> str:
    """Where the front reaches the gate (PROXY headers trusted here only)."""
    return f"{gate_run_dir(mode)}/front.sock"


FRONT_GROUP = {"haproxy": "haproxy", "nginx": "www-data"}  # the group each front's workers run as


TLS_DIR = f"{ETC}/tls"  # front.tls: the app CA, its CRL, the front's certificate and key (for the gates)
TLS_FILES = {name: f"{TLS_DIR}/{name}.pem" for name in ("ca", "crl", "cert", "key")}
