"""The ibgw backend (IB Gateway under IBC) provisioned on gw in the lab.

IB's installer and IBC cannot be downloaded here, so the artifact cache holds
stand-ins built below: an install4j-like installer that lays out IB's tree,
and an IBC zip whose ibcstart.sh checks what IBC would need (its ini readable,
the settings dir writable, the heap file, Xvfb's socket) and then stays up. Every
other part is real: sha256 pinning, upload, install stamps, Xvfb, the secret.
"""

from __future__ import annotations

import hashlib
import os
import secrets as pysecrets
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from ibgw_provision.provision import layout
from tests.kit.lab import LAB

from .conftest import NAME, fresh_host, ibgw, recap, suite_inventory

pytestmark = pytest.mark.lab

INSTALLER = """#!/bin/sh
# Stand-in for IB Gateway's install4j installer: `sh installer -q -dir DIR`.
[ "$1" = "-q" ] && [ "$2" = "-dir" ] || { echo "usage: -q -dir DIR" >&2; exit 2; }
mkdir -p "$3/jars" "$3/.install4j"
printf -- '-Xmx768m\\n' > "$3/ibgateway.vmoptions"
printf '#!/bin/sh\\n' > "$3/ibgateway" && chmod +x "$3/ibgateway"
"""

IBCSTART = """#!/bin/sh
# Stand-in for IBC's ibcstart.sh: check the inputs IBC reads, record the args, stay up.
set -eu
for arg; do case $arg in
  --tws-path=*) tws=${arg#*=};; --tws-settings-path=*) settings=${arg#*=};; --ibc-ini=*) ini=${arg#*=};;
esac; done
test -r "$ini" && grep -q '^IbPassword=.' "$ini"
touch "$settings/.writable" && rm "$settings/.writable"
grep -q '^-Xmx' "$tws/ibgateway/$1/ibgateway.vmoptions"
test -S "/tmp/.X11-unix/X${DISPLAY#:}"  # Xvfb's socket, in the /tmp it shares with us
echo "$@" > "$settings/ibcstart.args"
# A window on the display, as the gateway's login dialog would be (xmessage: x11-utils, if installed;
# tests/infra/test_screen.py installs it and waits for the window).
(for _ in $(seq 600); do command -v xmessage >/dev/null && exec xmessage -geometry 420x120+300+300 \
  "IB Gateway stand-in ($1)"; sleep 1; done) &
exec sleep infinity
"""


def _artifacts(cache: Path) -> dict[str, str]:
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "ibgateway-10.30.1t-standalone-linux-x64.sh").write_text(INSTALLER)
    with zipfile.ZipFile(cache / "IBCLinux-3.20.0.zip", "w") as zf:
        zf.writestr("scripts/ibcstart.sh", IBCSTART)
        zf.writestr("config.ini", "# IBC's sample, unused: ibgw renders its own\n")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.iterdir()}


def _inventory(tmp: Path, sums: dict[str, str]) -> Path:
    """The suite's inventory with the ibgw backend: a login by reference per gateway, live's heap 1g,
    and the stand-in artifacts pinned (first in the file: the tamper test names line 4)."""

    def ibgw_backend(host: dict) -> None:
        host["backend"] = "ibgw"
        for gw in host["gateways"]:
            gw["login"] = {"username": {"env": "IBGW_TEST_USER"}, "password": {"env": "IBGW_TEST_PASSWORD"}}
        host["gateways"][1]["java_heap"] = "1g"

    path = suite_inventory(tmp, ibgw_backend, name="ibgw")
    gw, ibc = "ibgateway-10.30.1t-standalone-linux-x64.sh", "IBCLinux-3.20.0.zip"
    path.write_text(
        f"artifacts:\n  cache_dir: {tmp / 'cache'}\n"
        f"  ib_gateway: {{version: '10.30.1t', file: {gw}, sha256: '{sums[gw]}'}}\n"
        f"  ibc: {{version: '3.20.0', file: {ibc}, sha256: '{sums[ibc]}'}}\n" + path.read_text()
    )
    return path


PASSWORD = "pw-" + pysecrets.token_hex(12)
ENV = {**os.environ, "IBGW_TEST_USER": "tester", "IBGW_TEST_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def setup(lab, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ibgw-backend")
    inv = _inventory(tmp, _artifacts(tmp / "cache"))
    return inv, fresh_host(lab, inv, env=ENV)


@pytest.fixture
def host(setup, ssh_host):
    return ssh_host


@pytest.mark.parametrize(
    "unit", [f"ibgw-{kind}-{mode}.service" for kind in ("xvfb", "gateway") for mode in ("paper", "live")]
)
def test_xvfb_and_gateway_units_run(host, unit):
    assert host.service(unit).is_enabled and host.service(unit).is_running


def test_ibcstart_gets_ibc_arguments_and_no_secret(host):
    for mode in ("paper", "live"):
        args = host.file(f"{layout.settings_dir(mode)}/ibcstart.args").content_string
        assert args.startswith("1030 --gateway ")
        assert f"--mode={mode}" in args and f"--ibc-ini={layout.ibc_ini(mode)}" in args
        assert PASSWORD not in args and "tester" not in args


def _holders(secret: str) -> list[str]:
    """The files on gw that hold `secret`: grep as root on gw, given the secret on stdin. (Through
    testinfra it would be in a sudo command line, which sudo logs to the journal.)"""
    dirs = ("/etc", "/var/lib/ibgw", "/var/log", "/opt/ibgw", "/tmp", "/root", "/home", "/var/tmp")
    proc = subprocess.run(
        [str(LAB), "exec", NAME, "grep", "-rlF", "-f", "-", *dirs],
        input=secret + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: found nowhere
    return sorted(proc.stdout.split())


def test_secret_is_delivered_0600_to_ibkr_and_nowhere_else(setup, host):
    _, first = setup
    for mode in ("paper", "live"):
        ini = host.file(layout.ibc_ini(mode))
        assert (ini.user, ini.group, ini.mode) == ("ibkr", "ibkr", 0o600)
        assert f"IbPassword={PASSWORD}\n" in ini.content_string
    assert PASSWORD not in first.stdout + first.stderr
    assert _holders(PASSWORD) == sorted(layout.ibc_ini(m) for m in ("paper", "live"))
    assert PASSWORD not in host.check_output("ps -eo args")
    assert PASSWORD not in host.check_output("journalctl --no-pager -o cat")


def test_java_heap_per_gateway(host):
    live = host.file(f"{layout.ib_gateway_dir('live', '10.30.1t')}/ibgateway.vmoptions").content_string
    paper = host.file(f"{layout.ib_gateway_dir('paper', '10.30.1t')}/ibgateway.vmoptions").content_string
    assert live.startswith("-Xmx1g\n") and paper.startswith("-Xmx768m\n")


def test_second_run_reinstalls_nothing(setup):
    inv, _ = setup
    second = ibgw("provision", NAME, "-i", str(inv), env=ENV)
    assert second.returncode == 0, second.stdout
    assert recap(second)["changed"] == 0


def test_a_new_password_shows_as_a_masked_diff(setup, host):
    inv, _ = setup
    new = "pw-" + pysecrets.token_hex(12)
    check = ibgw(
        "provision", NAME, "-i", str(inv), "--check", "--diff", env={**ENV, "IBGW_TEST_PASSWORD": new}
    )
    assert check.returncode == 0
    assert f"would change: file {layout.ibc_ini('paper')}" in check.stdout
    assert "-IbPassword=********\n+IbPassword=******** (changed)\n" in check.stdout
    assert PASSWORD not in check.stdout and new not in check.stdout
    assert f"IbPassword={PASSWORD}\n" in host.file(layout.ibc_ini("paper")).content_string


def test_a_tampered_installer_is_refused_before_connecting(setup, tmp_path):
    inv, _ = setup
    text = inv.read_text()
    cache = Path(text.split("cache_dir: ", 1)[1].splitlines()[0])
    (tmp_path / "cache").mkdir()
    for f in cache.iterdir():
        (tmp_path / "cache" / f.name).write_bytes(f.read_bytes())
    with open(tmp_path / "cache" / "IBCLinux-3.20.0.zip", "ab") as fh:
        fh.write(b"tampered")
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace(str(cache), str(tmp_path / "cache")))
    proc = ibgw("provision", NAME, "-i", str(bad), env=ENV)
    assert proc.returncode == 2
    assert f"{bad}:4: artifacts.ibc.sha256: " in proc.stderr and "refusing to install it" in proc.stderr


def test_a_time_zone_change_converges_jts_ini_and_keeps_the_gateways_keys(setup, host):
    """IB Gateway rewrites jts.ini: ibgw converges only its own keys there, on every run."""
    inv, _ = setup
    jts, unit = f"{layout.settings_dir('paper')}/jts.ini", layout.gateway_unit("paper")
    host.run(f"printf 'Peer=cdc1.ibllc.com:4001\\n' >> {jts}")  # as the gateway adds its own keys
    zurich = inv.parent / "zurich.yml"
    doc = yaml.safe_load(inv.read_text())
    doc["hosts"][NAME]["gateways"][0]["ibc"] = {"time_zone": "Europe/Zurich"}
    zurich.write_text(yaml.safe_dump(doc, sort_keys=False))
    for path, zone in ((zurich, "Europe/Zurich"), (inv, "America/New_York")):
        run = ibgw("provision", NAME, "-i", str(path), env=ENV)
        assert run.returncode == 0, run.stdout + run.stderr
        content = host.file(jts).content_string
        assert f"TimeZone={zone}\n" in content and content.endswith("Peer=cdc1.ibllc.com:4001\n")
        assert (host.file(jts).user, host.file(jts).mode) == ("ibkr", 0o600)
        assert f" TZ={zone}\n" in host.file(f"{layout.UNIT_DIR}/{unit}").content_string
        assert host.service(unit).is_running
    again = ibgw("provision", NAME, "-i", str(inv), env=ENV)
    assert recap(again)["changed"] == 0


def test_upgrades_keep_exactly_two_trees_and_their_installers(setup, host):
    """10.30 -> 10.31 -> 10.32 with the stand-in installer: each gateway keeps the current tree
    and the one before it; the oldest tree and its upload are removed."""
    inv, _ = setup
    cache, text = inv.parent / "cache", inv.read_text()
    for version in ("10.31.1a", "10.32.1b"):
        name = f"ibgateway-{version}-standalone-linux-x64.sh"
        (cache / name).write_text(INSTALLER + f"# {version}\n")
        digest = hashlib.sha256((cache / name).read_bytes()).hexdigest()
        text = text.replace(
            text.split("  ib_gateway: ", 1)[1].split("\n", 1)[0],
            f"{{version: '{version}', file: {name}, sha256: '{digest}'}}",
        )
        inv.write_text(text)
        run = ibgw("provision", NAME, "-i", str(inv), env=ENV)
        assert run.returncode == 0, run.stdout + run.stderr
    for mode in ("paper", "live"):
        trees = host.run(f"ls {layout.tws_path(mode)}/ibgateway").stdout.split()
        assert trees == ["1031", "1032"], trees
        assert host.service(layout.gateway_unit(mode)).is_running
    uploads = host.run(f"ls {layout.UPLOADS}").stdout
    assert "10.30.1t" not in uploads and "10.31.1a" in uploads and "10.32.1b" in uploads
    again = ibgw("provision", NAME, "-i", str(inv), env=ENV)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout
