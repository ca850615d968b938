"""The plan: facts in, tasks out. Converged facts give no change; each difference gives one."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from ibgw_provision.inventory.secrets import MASK, Secrets
from ibgw_provision.provision import agent, layout, state
from ibgw_provision.provision.plan import PlanError, _secret_file_lines, plan, sha256


def converged(want) -> dict:
    """The facts of a host that already is what `want` describes."""
    paths = {
        d.path: {"kind": "dir", "mode": d.mode, "owner": d.owner, "group": d.group, "sha256": None}
        for d in want.dirs
    }
    paths |= {
        f.path: {
            "kind": "file",
            "mode": f.mode,
            "owner": f.owner,
            "group": f.group,
            "sha256": sha256(f.content),
        }
        for f in want.files
    }
    return {
        "packages": dict.fromkeys(want.packages, True),
        "user": {"home": layout.HOME, "shell": "/usr/sbin/nologin", "uid": 990, "groups": ["ibkr"]},
        "paths": paths,
        "content": {},
        "units": {u: {"enabled": "enabled", "active": "active"} for u in want.units},
        "markers": {f"{i.dest}/{layout.INSTALL_STAMP}": i.sha256 for i in want.installs},
    }


@pytest.fixture
def want(example, monkeypatch):
    monkeypatch.setattr("ibgw_provision.inventory.secrets._read", lambda ref: f"secret-{ref.env or 'file'}")
    return state.desired(example, "gw1", Secrets())


def _changed(result) -> dict[str, str]:
    return {t.name: t.detail for t in result.changed}


def _systemd_step(result) -> dict:
    (step,) = [s for s in result.steps() if s["kind"] == "systemd"]
    return step


def test_converged_host_plans_nothing(want):
    result = plan(want, converged(want), Secrets())
    assert result.changed == [] and result.steps() == []
    assert len(result.tasks) > 20


def test_fresh_host_plans_everything_in_order(want):
    facts = {"packages": {}, "user": None, "paths": {}, "content": {}, "units": {}, "markers": {}}
    result = plan(want, facts, Secrets())
    kinds = [s["kind"] for s in result.steps()]
    assert kinds[:3] == ["apt", "user", "dir"]
    assert kinds[-1] == "systemd" and "file" in kinds
    assert kinds.index("dir") < kinds.index("file")
    (apt,) = [s for s in result.steps() if s["kind"] == "apt"]
    assert apt["packages"] == want.packages
    systemd = _systemd_step(result)
    assert systemd["daemon_reload"] and set(systemd["enable"]) == set(want.units)


def test_drift_in_haproxy_cfg_reloads_haproxy_only(want):
    facts = converged(want)
    facts["paths"]["/etc/haproxy/haproxy.cfg"]["sha256"] = "0" * 64
    facts["content"]["/etc/haproxy/haproxy.cfg"] = "# edited by hand\n"
    result = plan(want, facts, Secrets())
    assert list(_changed(result)) == ["file /etc/haproxy/haproxy.cfg", "service haproxy.service"]
    systemd = _systemd_step(result)
    assert (systemd["reload"], systemd["restart"], systemd["daemon_reload"]) == (
        ["haproxy.service"],
        [],
        False,
    )
    (step,) = [s for s in result.steps() if s["kind"] == "file"]
    assert step["validate"][0] == "haproxy"
    diff = result.changed[0].diff
    assert "-# edited by hand" in diff and "+frontend paper" in diff


def test_changed_ibc_config_restarts_only_its_gateway(want):
    facts = converged(want)
    facts["paths"][layout.ibc_ini("live")]["sha256"] = "0" * 64
    systemd = _systemd_step(plan(want, facts, Secrets()))
    assert systemd["restart"] == [layout.gateway_unit("live")]
    assert systemd["reload"] == [] and not systemd["daemon_reload"]


def test_changed_unit_file_reloads_systemd_and_restarts_the_unit(want):
    facts = converged(want)
    facts["paths"][f"{layout.UNIT_DIR}/{layout.gateway_unit('paper')}"]["sha256"] = "0" * 64
    systemd = _systemd_step(plan(want, facts, Secrets()))
    assert systemd["daemon_reload"] and systemd["restart"] == [layout.gateway_unit("paper")]


def test_a_stopped_unit_is_started_and_one_with_new_inputs_restarted(want):
    facts = converged(want)
    facts["units"]["haproxy.service"]["active"] = "inactive"
    facts["units"][layout.gateway_unit("paper")]["active"] = "failed"
    facts["paths"]["/etc/haproxy/haproxy.cfg"]["sha256"] = "0" * 64
    systemd = _systemd_step(plan(want, facts, Secrets()))
    assert systemd["start"] == [layout.gateway_unit("paper")]
    assert systemd["restart"] == ["haproxy.service"]  # started by apt on the old config


def test_mode_and_owner_drift(want):
    facts = converged(want)
    facts["paths"][layout.ibc_ini("paper")] |= {"mode": 0o644, "owner": "root"}
    changed = _changed(plan(want, facts, Secrets()))
    assert changed[f"file {layout.ibc_ini('paper')}"] == "owner root -> ibkr, mode 0644 -> 0600"


def test_jts_ini_keeps_the_gateways_keys_and_converges_ibgws(want):
    facts = converged(want)
    jts, unit = f"{layout.settings_dir('paper')}/jts.ini", layout.gateway_unit("paper")
    rendered = next(f.content for f in want.files if f.path == jts)
    facts["paths"][jts]["sha256"] = "rewritten-by-ib-gateway"
    facts["content"][jts] = rendered.replace("WriteDebug=false", "WriteDebug=true") + "LastLogin=today\n"
    assert plan(want, facts, Secrets()).changed == []
    facts["content"][jts] = facts["content"][jts].replace("=America/New_York", "=Europe/Paris")
    result = plan(want, facts, Secrets())
    assert _changed(result) == {f"file {jts}": "ibgw's keys differ", f"service {unit}": "restart"}
    (step,) = [s for s in result.steps() if s["kind"] == "ini"]
    assert step["values"] == {
        "IBGateway": {"TrustedIPs": "127.0.0.1", "ApiOnly": "true"},
        "Logon": {"TimeZone": "America/New_York"},
    }
    assert step["stop"] == [unit] and step["mode"] == 0o600 and step["owner"] == "ibkr"
    (task,) = [t for t in result.changed if t.name == f"file {jts}"]
    assert "-TimeZone=Europe/Paris\n+TimeZone=America/New_York\n" in task.diff
    assert "WriteDebug" not in task.diff
    del facts["paths"][jts]
    assert _changed(plan(want, facts, Secrets())) == {f"file {jts}": "create", f"service {unit}": "restart"}


def test_sudoer_ibkr_is_demoted(want):
    facts = converged(want)
    facts["user"]["groups"] = ["ibkr", "sudo"]
    assert _changed(plan(want, facts, Secrets())) == {"user ibkr": "remove from sudo"}


def test_agent_and_plan_agree_on_privileged_groups():
    """The agent runs alone on the host, so it keeps its own copy of the list the plan checks."""
    assert agent.PRIVILEGED_GROUPS == layout.PRIVILEGED_GROUPS


def test_secret_diff_masks_old_and_new_values(want, example):
    resolver = Secrets()
    desired = state.desired(example, "gw1", resolver)
    facts = converged(desired)
    path = layout.ibc_ini("paper")
    facts["paths"][path]["sha256"] = "0" * 64
    facts["content"][path] = "IbLoginId=old-user\nIbPassword=old-password\nTradingMode=live\n"
    (task,) = [t for t in plan(desired, facts, resolver).changed if t.name == f"file {path}"]
    assert "old-password" not in task.diff and "old-user" not in task.diff
    assert "secret-" not in task.diff
    assert f"-IbPassword={MASK}\n" in task.diff and f"+IbPassword={MASK} (changed)\n" in task.diff
    assert "-TradingMode=live" in task.diff and "+TradingMode=paper" in task.diff


def test_new_gateway_version_installs_and_rewrites_the_heap(want):
    facts = converged(want)
    live = next(i for i in want.installs if i.dest == layout.ib_gateway_dir("live", "10.37.1n"))
    facts["markers"][f"{live.dest}/{layout.INSTALL_STAMP}"] = "an older installer"
    result = plan(want, facts, Secrets())
    assert _changed(result) == {
        f"install {live.dest}": "ibgateway-10.37.1n-standalone-linux-x64.sh (sha256 000000000000…)",
        f"file {live.dest}/ibgateway.vmoptions": "create",
        f"service {layout.gateway_unit('live')}": "restart",
    }
    assert result.uploads == [(live.local, live.upload)]


def test_an_arm64_host_gets_the_arm_installer(want, example):
    facts = converged(want) | {"arch": "aarch64"}
    for install in want.installs:
        facts["markers"][f"{install.dest}/{layout.INSTALL_STAMP}"] = "none yet"
    result = plan(want, facts, Secrets())
    installs = {s["dest"]: s for s in result.steps() if s["kind"] == "install"}
    arm = example.artifacts.ib_gateway.arm64
    for mode in ("paper", "live"):
        step = installs[layout.ib_gateway_dir(mode, "10.37.1n")]
        assert step["upload"].endswith("-" + arm.file) and step["sha256"] == arm.sha256
    ibc = installs[layout.ibc_dir("3.24.1")]
    assert ibc["upload"].endswith("-IBCLinux-3.24.1.zip")
    assert {local.name for local, _ in result.uploads} == {arm.file, "IBCLinux-3.24.1.zip"}


def test_an_arm64_host_without_a_pinned_arm_installer_is_refused(want):
    unpinned = dataclasses.replace(want, installs=[dataclasses.replace(i, arm64=None) for i in want.installs])
    with pytest.raises(PlanError, match=r"aarch64.*artifacts\.ib_gateway\.arm64"):
        plan(unpinned, converged(want) | {"arch": "aarch64"}, Secrets())
    assert plan(unpinned, converged(want) | {"arch": "x86_64"}, Secrets()).changed == []


def test_plan_does_not_mutate_facts(want):
    facts = converged(want)
    facts["paths"]["/etc/haproxy/haproxy.cfg"]["sha256"] = "0" * 64
    before = copy.deepcopy(facts)
    plan(want, facts, Secrets())
    assert facts == before


def test_actions_owed_by_a_failed_run_are_still_taken(want):
    """A run wrote the files, then failed before systemd: the next run finds the files converged."""
    facts = converged(want)
    owed = {
        "daemon_reload": True,
        "restart": [layout.gateway_unit("paper"), "not-ours.service"],
        "reload": ["haproxy.service"],
    }
    facts["markers"][layout.PENDING] = __import__("json").dumps(owed)
    systemd = _systemd_step(plan(want, facts, Secrets()))
    assert systemd["daemon_reload"] and systemd["restart"] == [layout.gateway_unit("paper")]
    assert systemd["reload"] == ["haproxy.service"]


def test_changed_files_tell_the_agent_which_actions_they_owe(want):
    facts = converged(want)
    facts["paths"][layout.ibc_ini("live")]["sha256"] = "0" * 64
    result = plan(want, facts, Secrets())
    (step,) = [s for s in result.steps() if s["kind"] == "file"]
    assert step["then"]["restart"] == [layout.gateway_unit("live")]
    assert result.request()["pending"] == layout.PENDING


def test_a_symlink_in_place_of_a_seed_file_is_replaced_not_followed(want):
    facts = converged(want)
    jts = f"{layout.settings_dir('paper')}/jts.ini"
    facts["paths"][jts] = {"kind": "link", "mode": 0o777, "owner": "ibkr", "group": "ibkr", "sha256": None}
    (step,) = [s for s in plan(want, facts, Secrets()).steps() if s["task"] == f"file {jts}"]
    assert step["kind"] == "file"


def test_a_flushed_firewall_table_is_loaded_again(want):
    if layout.FIREWALL_UNIT not in want.units:
        pytest.skip("the example host has no firewall")
    facts = converged(want) | {"firewall": False}
    assert _systemd_step(plan(want, facts, Secrets()))["reload"] == [layout.FIREWALL_UNIT]


# ---- issue 13: --diff shows no secret, old or new; installs stay inside their base ----------------


@pytest.fixture
def ibc_diff(example, monkeypatch):
    """The paper config.ini's diff against an old host copy, with the current login user-1 / pw-1."""
    monkeypatch.setattr(
        "ibgw_provision.inventory.secrets._read",
        lambda ref: "user-1" if "USER" in (ref.env or "") else "pw-1",
    )

    def diff(old: str) -> str:
        resolver = Secrets()
        desired = state.desired(example, "gw1", resolver)
        facts, path = converged(desired), layout.ibc_ini("paper")
        facts["paths"][path]["sha256"] = "0" * 64
        facts["content"][path] = old
        (task,) = [t for t in plan(desired, facts, resolver).changed if t.name == f"file {path}"]
        return task.diff

    return diff


@pytest.mark.parametrize(
    "old_line",
    [
        "IbPassword = old-pw",
        "ibpassword=old-pw",
        "IBPASSWORD\t=\told-pw",
        "# IbPassword=old-pw",
        "#old-pw",
        "old-pw",
        "IbPasswrd=old-pw",
        "IbPassword=old-pw\n# the password was old-pw",
        "  IbPassword=old-pw\r",
        "[section] old-pw",
        "TradingMode=live\nIbPassword=pw-1-old-pw",
    ],
)
def test_a_secret_files_diff_shows_no_secret_however_the_host_spells_it(ibc_diff, old_line):
    diff = ibc_diff(f"IbLoginId = old-user\n{old_line}\nTradingMode=live\n")
    assert "old-pw" not in diff and "old-user" not in diff and "pw-1" not in diff and "user-1" not in diff
    assert "-TradingMode=live" in diff and "+TradingMode=paper" in diff  # what is no secret still shows
    assert f"+IbPassword={MASK} (changed)\n" in diff and f"+IbLoginId={MASK} (changed)\n" in diff


def test_an_unchanged_secret_is_not_marked_and_our_comments_show(ibc_diff):
    diff = ibc_diff("# Holds the IB login: mode 0600, owned by ibkr.\nIbLoginId=user-1\nIbPassword=pw-1\n")
    assert f" IbPassword={MASK}\n" in diff and f" IbLoginId={MASK}\n" in diff and "(changed)" not in diff
    assert " # Holds the IB login: mode 0600, owned by ibkr.\n" in diff


def test_other_files_diffs_are_not_masked_where_a_short_secret_is_a_common_word(example, monkeypatch):
    monkeypatch.setattr(
        "ibgw_provision.inventory.secrets._read", lambda ref: "paper" if "USER" in (ref.env or "") else "pw-1"
    )
    resolver = Secrets()
    desired = state.desired(example, "gw1", resolver)
    facts = converged(desired)
    facts["paths"]["/etc/haproxy/haproxy.cfg"]["sha256"] = "0" * 64
    facts["content"]["/etc/haproxy/haproxy.cfg"] = "# the login was paper / pw-1\nfrontend paper\n"
    (task,) = [t for t in plan(desired, facts, resolver).changed if t.name == "file /etc/haproxy/haproxy.cfg"]
    assert "\n frontend paper\n" in task.diff and "default_backend paper_gateway\n" in task.diff
    assert f"-# the login was {MASK} / {MASK}\n" in task.diff  # a line only the host has may hold one
    assert task.diff.count(MASK) == 2


def test_a_key_that_merely_contains_pass_is_no_secret():
    resolver = Secrets()
    resolver.values.add("pw-1")
    old, new = _secret_file_lines(
        "BypassOrderPrecautions=no\nIbPassword=pw-0\n",
        "BypassOrderPrecautions=yes\nIbPassword=pw-1\n",
        resolver,
    )
    assert old == f"BypassOrderPrecautions=no\nIbPassword={MASK}\n"
    assert new == f"BypassOrderPrecautions=yes\nIbPassword={MASK} (changed)\n"


def test_masking_free_text_masks_whole_tokens_only():
    resolver = Secrets()
    resolver.values |= {"per", "p@ss!"}
    assert (
        resolver.mask("paper per per. per_x p@ss! x-p@ss!y") == f"paper {MASK} {MASK}. per_x {MASK} x-{MASK}y"
    )


def test_every_install_step_names_the_base_its_dest_must_stay_in(want):
    installs = [
        s for s in plan(want, {**converged(want), "markers": {}}, Secrets()).steps() if s["kind"] == "install"
    ]
    assert len(installs) == 3
    for step in installs:
        agent.inside(step["dest"], step["base"])
        assert step["base"] in (f"{layout.OPT}/ibc", layout.tws_path("paper"), layout.tws_path("live"))


def test_a_new_crl_reloads_the_gates_and_restarts_nothing(want):
    facts = converged(want)
    facts["paths"][layout.TLS_FILES["crl"]]["sha256"] = "0" * 64
    systemd = _systemd_step(plan(want, facts, Secrets()))
    assert systemd["reload"] == [layout.gate_unit("paper"), layout.gate_unit("live")]
    assert systemd["restart"] == [] and not systemd["daemon_reload"]


def test_the_front_key_is_a_secret_masked_in_diffs(want):
    facts = converged(want)
    path = layout.TLS_FILES["key"]
    facts["paths"][path]["sha256"] = "0" * 64
    facts["content"][path] = "-----BEGIN PRIVATE KEY-----\nold-key-material\n-----END PRIVATE KEY-----\n"
    (task,) = [t for t in plan(want, facts, Secrets()).changed if t.name == f"file {path}"]
    assert "old-key-material" not in task.diff
    key = next(f for f in want.files if f.path == path)
    assert key.secret and (key.mode, key.owner, key.group) == (0o640, "root", "ibkr")
    assert all(line not in task.diff for line in key.content.splitlines()[1:-1])
