"""IBC's options, each rendered into config.ini and the gateway unit as IBC documents it.

The 2FA rows are judged by a model of what IBC does with the rendered files, taken from
IBC's own code: LoginManager.java (re-login only if ReloginAfterSecondFactorAuthenticationTimeout,
exit 1111 % 256 = 87 only then) and scripts/ibcstart.sh (--on2fatimeout=restart relaunches after 87,
=exit ends with 87). jts.ini convergence runs the agent's own functions on a real file.
"""

from __future__ import annotations

import base64
import re
import textwrap

import pytest
from click.testing import CliRunner

from ibgw_provision import inventory
from ibgw_provision.cli import main
from ibgw_provision.errors import InputError
from ibgw_provision.inventory.model import IBC_FIXED, IBC_KEYS, IBC_OWNED
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import agent, layout
from ibgw_provision.provision.plan import owned_values
from ibgw_provision.provision.render import render_host

INVENTORY = textwrap.dedent("""\
    artifacts:
      ib_gateway: {version: "10.37.1n", file: gw.sh, sha256: "%s"}
      ibc: {version: "3.24.1", file: ibc.zip, sha256: "%s"}
    hosts:
      gw:
        address: 192.0.2.1
        firewall: {admin_cidrs: [192.0.2.100/32]}
        gateways:
          - mode: live
            login: {username: {env: U}, password: {env: P}}
            ibc:
              IBC_OPTIONS
    """) % ("a" * 64, "b" * 64)


def _write(tmp_path, options: str):
    text = INVENTORY.replace("IBC_OPTIONS", options.replace("\n", "\n          ") if options else "{}")
    path = tmp_path / "inv.yml"
    path.write_text(text)
    return path, text


def _render(tmp_path, options: str) -> tuple[dict[str, str], str]:
    """config.ini as {key: value}, and the gateway unit's text."""
    path, _ = _write(tmp_path, options)
    files = {f.path: f.content for f in render_host(inventory.load(path), "gw", Secrets(masked=True))}
    ini = files[layout.ibc_ini("live")]
    keys = [line.split("=", 1)[0] for line in ini.splitlines() if line and not line.startswith("#")]
    assert len(keys) == len(set(keys)), f"a key is set twice: {keys}"
    config = dict(line.split("=", 1) for line in ini.splitlines() if line and not line.startswith("#"))
    return config, files[f"{layout.UNIT_DIR}/{layout.gateway_unit('live')}"]


def _refused(tmp_path, options: str) -> tuple[list, str]:
    path, text = _write(tmp_path, options)
    with pytest.raises(InputError) as err:
        inventory.load(path)
    return err.value.problems, text


def ibc_outcome(config: dict, unit: str) -> tuple[str, str]:
    """What IBC 3.24 does (unanswered 2FA prompt, login stuck after an answered one) under these files."""
    relogin = config.get("ReloginAfterSecondFactorAuthenticationTimeout", "").lower() in ("yes", "true")
    if not relogin:  # LoginManager: "Re-login ... not required"; no exit timer is armed either
        return "waits at the 2FA dialog", "loading continues, IBC never exits"
    action = re.search(r"--on2fatimeout=(\w+)", unit).group(1)
    if action == "restart":  # ibcstart.sh loops on exit 87
        return "re-login, a new push", "ibcstart.sh relaunches IBC in the unit"
    restarts = re.search(r"^Restart=(always|on-failure)$", unit, re.M) or re.search(
        r"^RestartForceExitStatus=.*\b87\b", unit, re.M
    )
    return "re-login, a new push", "systemd starts a fresh login" if restarts else "the gateway stays down"


TWOFA = [  # (twofa_timeout_action, relogin_after_twofa_timeout, IBC on a timeout, after a stuck login)
    ("restart", "true", "re-login, a new push", "ibcstart.sh relaunches IBC in the unit"),
    ("exit", "true", "re-login, a new push", "systemd starts a fresh login"),
    ("exit", "false", "waits at the 2FA dialog", "loading continues, IBC never exits"),
]


@pytest.mark.parametrize("action,relogin,on_timeout,when_stuck", TWOFA)
def test_every_2fa_combination_does_what_ibc_documents(tmp_path, action, relogin, on_timeout, when_stuck):
    config, unit = _render(
        tmp_path, f"twofa_timeout_action: {action}\nrelogin_after_twofa_timeout: {relogin}"
    )
    assert config["ReloginAfterSecondFactorAuthenticationTimeout"] == ("yes" if relogin == "true" else "no")
    assert "ExitAfterSecondFactorAuthenticationTimeout" not in config  # deprecated: Relogin wins
    assert f" --on2fatimeout={action} " in unit
    assert ibc_outcome(config, unit) == (on_timeout, when_stuck)
    # An exit 87 reaches systemd only with exit + re-login: then it must restart the unit.
    assert ("RestartForceExitStatus=87" in unit) == (action == "exit" and relogin == "true")


def test_restart_without_relogin_is_refused(tmp_path):
    """IBC's gatewaystart.sh: 'restart' needs ReloginAfterSecondFactorAuthenticationTimeout=yes."""
    problems, text = _refused(tmp_path, "twofa_timeout_action: restart\nrelogin_after_twofa_timeout: false")
    (problem,) = problems
    assert problem.field == "hosts.gw.gateways[0].ibc.twofa_timeout_action"
    assert problem.line == text[: text.index("twofa_timeout_action")].count("\n") + 1
    assert "needs relogin_after_twofa_timeout: true" in problem.message


def test_defaults(tmp_path):
    config, unit = _render(tmp_path, "")
    assert config["AcceptBidAskLastSizeDisplayUpdateNotification"] == "accept"
    assert config["AutoRestartTime"] == "11:59 PM" and "AutoLogoffTime" not in config
    assert "ColdRestartTime" not in config and "SecondFactorDevice" not in config
    assert config["AllowBlindTrading"] == "no" and config["AcceptIncomingConnectionAction"] == "reject"
    assert not [k for k in config if k.startswith("Bypass")]  # the gateway's own precautions stay
    assert "Environment=DISPLAY=:101 TZ=America/New_York\n" in unit


OPTIONS = [  # (inventory ibc options, config.ini keys they must give; None: the key is absent)
    (
        "accept_bid_ask_last_size_notification: defer",
        {"AcceptBidAskLastSizeDisplayUpdateNotification": "defer"},
    ),
    ("auto_logoff_time: '10:30 PM'", {"AutoLogoffTime": "10:30 PM", "AutoRestartTime": None}),
    ("auto_restart_time: null", {"AutoLogoffTime": None, "AutoRestartTime": None}),
    ("cold_restart_time: '17:00'", {"ColdRestartTime": "17:00", "AutoRestartTime": "11:59 PM"}),
    ("twofa_device: IB Key", {"SecondFactorDevice": "IB Key"}),
    ("bypass_warnings: true", {k: "yes" for k in IBC_KEYS if k.startswith("Bypass")}),
    ("bypass_warnings: false", {k: "no" for k in IBC_KEYS if k.startswith("Bypass")}),
    ("allow_blind_trading: true", {"AllowBlindTrading": "yes"}),
    ("save_tws_settings_at: 08:00 12:30 17:30", {"SaveTwsSettingsAt": "08:00 12:30 17:30"}),
    ("save_tws_settings_at: Every 90 08:00 17:43", {"SaveTwsSettingsAt": "Every 90 08:00 17:43"}),
    (
        "extra: {ClosedownAt: Friday 22:00, SecondFactorAuthenticationExitInterval: 120, ReadOnlyLogin: no}",
        {
            "ClosedownAt": "Friday 22:00",
            "SecondFactorAuthenticationExitInterval": "120",
            "ReadOnlyLogin": "no",
        },
    ),
    (
        "extra: {LoginDialogDisplayTimeout: 120, MinimizeMainWindow: yes}",
        {"LoginDialogDisplayTimeout": "120", "MinimizeMainWindow": "yes"},
    ),
]


@pytest.mark.parametrize("options,expected", OPTIONS, ids=[o for o, _ in OPTIONS])
def test_each_option_renders_its_ibc_key(tmp_path, options, expected):
    config, _ = _render(tmp_path, options)
    for key, value in expected.items():
        assert config.get(key) == value, key


def test_time_zone_reaches_jts_ini_and_the_jvm(tmp_path):
    path, _ = _write(tmp_path, "time_zone: Europe/Zurich")
    files = {f.path: f for f in render_host(inventory.load(path), "gw", Secrets(masked=True))}
    assert "TZ=Europe/Zurich" in files[f"{layout.UNIT_DIR}/{layout.gateway_unit('live')}"].content
    jts = files[f"{layout.settings_dir('live')}/jts.ini"]
    assert owned_values(jts) == {
        "IBGateway": {"TrustedIPs": "127.0.0.1", "ApiOnly": "true"},
        "Logon": {"TimeZone": "Europe/Zurich"},
    }


BAD = [  # (options, field under hosts.gw.gateways[0].ibc, text on its line, message fragment)
    (
        "auto_restart_time: '11:00 PM'\nauto_logoff_time: '10:00 PM'",
        "auto_logoff_time",
        "auto_logoff_time",
        "only one of auto_restart_time and auto_logoff_time",
    ),
    ("cold_restart_time: '5:00 PM'", "cold_restart_time", "cold_restart_time", "should match pattern"),
    ("twofa_timeout_action: retry", "twofa_timeout_action", "twofa_timeout_action", "'restart' or 'exit'"),
    (
        "accept_bid_ask_last_size_notification: yes",
        "accept_bid_ask_last_size_notification",
        "accept_bid_ask",
        "'accept', 'defer' or 'ignore'",
    ),
    ("save_tws_settings_at: sometimes", "save_tws_settings_at", "save_tws", "should match pattern"),
    ('twofa_device: "IB Key\\nIbPassword=x"', "twofa_device", "twofa_device", "single line"),
    ("extra:\n  ColdRestartTim: '17:00'", "extra.ColdRestartTim", "ColdRestartTim:", "not an IBC setting"),
    (
        "extra:\n  AutoRestartTime: '11:00 PM'",
        "extra.AutoRestartTime",
        "AutoRestartTime:",
        "set by ibgw: use ibc.auto_restart_time",
    ),
    (
        "extra:\n  BypassBondWarning: yes",
        "extra.BypassBondWarning",
        "BypassBondWarning:",
        "use ibc.bypass_warnings",
    ),
    ("extra:\n  IbPassword: hunter2", "extra.IbPassword", "IbPassword:", "use login.password"),
    (
        "extra:\n  CommandServerPort: 7462",
        "extra.CommandServerPort",
        "CommandServerPort:",
        "command server stays off",
    ),
    ('extra:\n  ClosedownAt: "Friday 22:00\\rFIX=yes"', "extra.ClosedownAt", "ClosedownAt:", "single line"),
    ('extra:\n  ClosedownAt: "a\\0b"', "extra.ClosedownAt", "ClosedownAt:", "single line"),
]


@pytest.mark.parametrize("options,field,marker,fragment", BAD, ids=[b[1] + ":" + b[0][:30] for b in BAD])
def test_bad_option_names_file_line_and_field(tmp_path, options, field, marker, fragment):
    problems, text = _refused(tmp_path, options)
    full = f"hosts.gw.gateways[0].ibc.{field}"
    problem = next((p for p in problems if p.field == full), problems[0])
    assert problem.field == full
    assert problem.line == text[: text.index(marker)].count("\n") + 1
    assert fragment in problem.message
    result = CliRunner().invoke(main, ["validate", "-i", str(tmp_path / "inv.yml")])
    assert result.exit_code == 2
    assert f"inv.yml:{problem.line}: {full}: " in result.output and "Traceback" not in result.output


def test_ibc_key_list_is_ibcs(tmp_path):
    """The shipped list holds IBC's keys once each, the ones ibgw owns among them."""
    assert len(IBC_KEYS) == len(set(IBC_KEYS)) > 50
    assert {"ColdRestartTime", "SecondFactorDevice", "ClosedownAt", "BypassOrderPrecautions"} <= set(IBC_KEYS)
    assert set(IBC_OWNED) | set(IBC_FIXED) <= set(IBC_KEYS)


# ---- jts.ini: ibgw's keys converge, IB Gateway's stay -----------------------------------------

GATEWAY_WROTE = """\
[IBGateway]
WriteDebug=true
TrustedIPs=127.0.0.1
MainWindow.Height=550
ApiOnly=true
LocalServerPort=4000

[Logon]
Locale=en
TimeZone=America/New_York
UseSSL=true
s3store=true
Individual=1
tradingMode=p
colorPalletName=dark

[Communication]
Peer=cdc1.ibllc.com:4001
"""


def _converge(path, want: dict) -> None:
    step = {
        "kind": "ini",
        "path": str(path),
        "owner": "root",
        "group": "root",
        "mode": 0o600,
        "values": want,
        "seed": base64.b64encode(b"[IBGateway]\n").decode(),
    }
    agent.step_ini(step)


def test_a_time_zone_change_converges_jts_ini_and_keeps_the_gateways_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(agent, "set_attrs", lambda path, step: None)  # no chown to root in a test dir
    jts = tmp_path / "jts.ini"
    jts.write_text(GATEWAY_WROTE)
    want = {
        "IBGateway": {"TrustedIPs": "127.0.0.1", "ApiOnly": "true"},
        "Logon": {"TimeZone": "Europe/Zurich"},
    }
    _converge(jts, want)
    after = jts.read_text()
    assert after == GATEWAY_WROTE.replace("TimeZone=America/New_York", "TimeZone=Europe/Zurich")
    _converge(jts, want)
    assert jts.read_text() == after  # idempotent


def test_missing_keys_and_sections_are_added_in_their_section(tmp_path, monkeypatch):
    monkeypatch.setattr(agent, "set_attrs", lambda path, step: None)
    jts = tmp_path / "jts.ini"
    jts.write_text(
        "[IBGateway]\nWriteDebug=false\nTrustedIPs=10.0.0.1,127.0.0.1\nTrustedIPs=0.0.0.0\n\n"
        "[Communication]\nPeer=x\n"
    )
    _converge(
        jts, {"IBGateway": {"TrustedIPs": "127.0.0.1", "ApiOnly": "true"}, "Logon": {"TimeZone": "Etc/UTC"}}
    )
    assert jts.read_text() == (
        "[IBGateway]\nWriteDebug=false\nTrustedIPs=127.0.0.1\nApiOnly=true\n\n"
        "[Communication]\nPeer=x\n\n[Logon]\nTimeZone=Etc/UTC\n"
    )
    assert agent.ini_values(jts.read_text())["IBGateway"]["TrustedIPs"] == "127.0.0.1"


def test_a_missing_jts_ini_gets_the_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(agent, "set_attrs", lambda path, step: None)
    jts = tmp_path / "jts.ini"
    _converge(jts, {"Logon": {"TimeZone": "Etc/UTC"}})
    assert jts.read_text() == "[IBGateway]\n"


# ---- installers per architecture ----------------------------------------------------------------


def test_every_pinned_installer_is_checked_before_any_host(tmp_path):
    import hashlib

    from ibgw_provision.inventory.preflight import check_artifacts

    files = {"gw.sh": b"x64 installer", "gw-arm.sh": b"arm installer", "ibc.zip": b"ibc"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    sha = {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}
    pinned = 'ib_gateway: {version: "10.37.1n", file: gw.sh, sha256: "%s"}'
    arm = (
        f'ib_gateway: {{version: "10.37.1n", file: gw.sh, sha256: "{sha["gw.sh"]}", '
        f'arm64: {{file: gw-arm.sh, sha256: "{"c" * 64}"}}}}'
    )
    text = INVENTORY.replace("IBC_OPTIONS", "{}").replace(pinned.replace("%s", "a" * 64), arm)
    text = text.replace("b" * 64, sha["ibc.zip"])
    path = tmp_path / "inv.yml"
    path.write_text(f"artifacts:\n  cache_dir: {tmp_path}\n" + text.replace("artifacts:\n", "", 1))
    with pytest.raises(InputError) as err:
        check_artifacts(inventory.load(path), ["gw"])
    (problem,) = err.value.problems
    assert problem.field == "artifacts.ib_gateway.arm64.sha256" and "gw-arm.sh has sha256" in problem.message
    path.write_text(path.read_text().replace("c" * 64, sha["gw-arm.sh"]))
    check_artifacts(inventory.load(path), ["gw"])
