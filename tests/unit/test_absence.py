"""What the inventory drops is removed: the manifest diffed, planned for each transition.

Each transition: provision A (converged facts of A), plan B, apply it on paper (the facts
of a host converged to B, holding the manifest B's run wrote), plan B again (0 changed),
then A again (it converges back). The firewall's on -> off is tested here and in the
agent's steps only: the shared test host is this machine's network namespace.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from pathlib import Path

import pytest
import yaml

from ibgw_provision import inventory
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import agent, apply, layout, recap, state
from ibgw_provision.provision.plan import decommission, facts_request, plan
from ibgw_provision.provision.resources import Dir, File, Unit
from tests.unit.test_plan import converged

EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "example.yml"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    monkeypatch.setattr("ibgw_provision.inventory.secrets._read", lambda ref: f"secret-{ref.env or 'file'}")


def desired(tmp_path: Path, edit=lambda host, doc: None) -> state.Desired:
    """The example's gw1, edited."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["hosts"]["gw1"]["front"]["tls"] = False  # no app CA here; TLS files are ordinary files too
    edit(doc["hosts"]["gw1"], doc)
    path = tmp_path / f"inv-{len(list(tmp_path.iterdir()))}.yml"
    path.write_text(yaml.safe_dump(doc))
    return state.desired(inventory.load(path), "gw1", Secrets())


def host(want: state.Desired) -> dict:
    """The facts of a host converged to `want`, with its install trees and uploads."""
    facts = converged(want)
    for i in want.installs:
        facts["paths"][i.dest] = {
            "kind": "dir",
            "mode": 0o755,
            "owner": i.owner,
            "group": i.owner,
            "sha256": None,
        }
        facts["paths"][i.upload] = {
            "kind": "file",
            "mode": 0o600,
            "owner": "root",
            "group": "root",
            "sha256": None,
        }
    return facts


def after(want: state.Desired, result, prior: dict) -> dict:
    """The facts of the host once `result` (a plan toward `want` from `prior`) is applied."""
    facts = host(want)
    gone = removed(result)
    for path, have in prior["paths"].items():
        if path not in gone and not any(path.startswith(g + "/") for g in gone):
            facts["paths"].setdefault(path, have)
    (record,) = [t for t in result.tasks if t.name.startswith("manifest ")]
    facts["manifest"] = record.step["manifest"] if record.changed else prior["manifest"]
    return facts


def transition(a: state.Desired, b: state.Desired):
    """Plan A -> B; check B is then converged, and A converges back. The A -> B plan is returned."""
    on_a = host(a)
    to_b = plan(b, on_a, Secrets())
    on_b = after(b, to_b, on_a)
    assert plan(b, on_b, Secrets()).changed == []
    back = plan(a, on_b, Secrets())
    on_a = after(a, back, on_b)
    assert plan(a, on_a, Secrets()).changed == []
    return to_b, back


def removed(result) -> set[str]:
    return {s["path"] for s in result.steps() if s["kind"] == "remove"}


def stopped(result) -> list[str]:
    return [s["unit"] for s in result.steps() if s["kind"] == "stop"]


def kinds(result) -> list[str]:
    return [s["kind"] for s in result.steps()]


def test_haproxy_to_nginx_stops_the_old_front_before_any_file_lands(tmp_path):
    a = desired(tmp_path)
    b = desired(tmp_path, lambda h, d: h["front"].update(kind="nginx"))
    to_b, back = transition(a, b)
    assert stopped(to_b) == ["haproxy.service"] and stopped(back) == ["nginx.service"]
    assert kinds(to_b).index("stop") < kinds(to_b).index("file")
    assert removed(to_b) == set()  # /etc/haproxy/haproxy.cfg is the package's place, not ibgw's
    systemd = next(s for s in to_b.steps() if s["kind"] == "systemd")
    assert "nginx.service" in systemd["enable"] and "haproxy.service" not in str(systemd)


def paper_only(host, doc):
    host["gateways"] = host["gateways"][:1]
    for app in host["apps"]:
        app["modes"] = ["paper"]


def test_two_gateways_to_paper_only_removes_everything_of_live(tmp_path):
    a = desired(tmp_path)
    b = desired(tmp_path, paper_only)
    to_b, _ = transition(a, b)
    live = [
        "ibgw-gate-live.service",
        "ibgw-gateway-live.service",
        "ibgw-restart-live.timer",
        "ibgw-xvfb-live.service",
    ]
    assert stopped(to_b) == live
    assert removed(to_b) == {
        "/etc/ibgw/live",  # config.ini with the IB password, as a tree
        "/var/lib/ibgw/live",  # jts.ini
        "/opt/ibgw/gateway-live",  # its install
        "/etc/ibgw/gate-live.yml",
        *(f"{layout.UNIT_DIR}/{u}" for u in live),
    }
    tree = {s["path"]: s["tree"] for s in to_b.steps() if s["kind"] == "remove"}
    assert tree["/etc/ibgw/live"] and not tree["/etc/ibgw/gate-live.yml"]
    assert "/var/log/ibgw/live" not in removed(to_b)  # its logs stay (a purge takes them)
    assert next(s for s in to_b.steps() if s["kind"] == "systemd")["daemon_reload"]
    assert any(t.name == f"file {layout.ETC}/firewall.nft" and t.changed for t in to_b.tasks)  # its rule goes
    assert kinds(to_b).index("stop") < kinds(to_b).index("file") < kinds(to_b).index("remove")


def test_gate_on_off_on_keeps_the_audit(tmp_path):
    a = desired(tmp_path)
    b = desired(tmp_path, lambda h, d: h["front"].update(gate=False))
    to_b, back = transition(a, b)
    assert stopped(to_b) == ["ibgw-gate-live.service", "ibgw-gate-paper.service"]
    assert {"/etc/ibgw/gate-live.yml", "/etc/ibgw/gate-paper.yml"} <= removed(to_b)
    assert layout.GATE_STATE not in removed(to_b)
    assert stopped(back) == [] and removed(back) == set()


def test_firewall_off_deletes_the_table_and_the_unit(tmp_path):
    a = desired(tmp_path)
    b = desired(tmp_path, lambda h, d: h["firewall"].update(enabled=False))
    facts = host(a) | {"firewall": True}
    to_b = plan(b, facts, Secrets())
    assert stopped(to_b) == [layout.FIREWALL_UNIT] and "nft_delete" in kinds(to_b)
    assert kinds(to_b).index("nft_delete") < kinds(to_b).index("remove")
    assert {f"{layout.ETC}/firewall.nft", f"{layout.UNIT_DIR}/{layout.FIREWALL_UNIT}"} <= removed(to_b)
    on_b = after(b, to_b, facts) | {"firewall": False}
    assert plan(b, on_b, Secrets()).changed == []


def _version(v: str):
    def edit(host, doc):
        doc["artifacts"]["ib_gateway"].update(
            version=v, file=f"ibgateway-{v}-standalone-linux-x64.sh", sha256=v[-1] * 64
        )

    return edit


def test_upgrades_keep_the_current_tree_and_the_one_before(tmp_path):
    versions = [desired(tmp_path, _version(v)) for v in ("10.37.1a", "10.38.1b", "10.39.1c")]
    facts = host(versions[0])
    for want in versions[1:]:
        result = plan(want, facts, Secrets())
        facts = after(want, result, facts)
    trees = facts["manifest"]["installs"]["gateway-paper"]
    assert [t[0] for t in trees] == [
        "/opt/ibgw/gateway-paper/ibgateway/1038",
        "/opt/ibgw/gateway-paper/ibgateway/1039",
    ]
    # the last run removed the oldest tree of each gateway, and its upload (shared by both)
    assert removed(result) == {
        "/opt/ibgw/gateway-paper/ibgateway/1037",
        "/opt/ibgw/gateway-live/ibgateway/1037",
        f"{layout.UPLOADS}/{'a' * 16}-ibgateway-10.37.1a-standalone-linux-x64.sh",
    }
    assert plan(versions[2], facts, Secrets()).changed == []


def test_only_manifest_entries_at_ibgws_places_are_removed(tmp_path):
    want = desired(tmp_path)
    facts = host(want)
    foreign = [
        "/etc/passwd",
        "/opt/ibgw/../../etc/shadow",
        "/etc/haproxy/haproxy.cfg",
        "/opt/ibgwx",
        "opt/ibgw/x",
    ]
    facts["manifest"] = copy.deepcopy(facts["manifest"])
    facts["manifest"]["paths"] += foreign + ["/opt/ibgw/old.txt"]
    facts["paths"] |= {
        p: {"kind": "file", "mode": 0o644, "owner": "root", "group": "root", "sha256": None}
        for p in foreign + ["/opt/ibgw/old.txt"]
    }
    result = plan(want, facts, Secrets())
    assert removed(result) == {"/opt/ibgw/old.txt"}
    assert not any(agent.removable(p) or layout.removable(p) for p in foreign)


def test_no_manifest_removes_nothing_and_records_one(tmp_path):
    want = desired(tmp_path)
    facts = host(want)
    del facts["manifest"]
    result = plan(want, facts, Secrets())
    assert [t.name for t in result.changed] == [f"manifest {layout.MANIFEST}"]
    assert removed(result) == set() and stopped(result) == []
    # the run first records the union of old and new, so a failure half-way forgets nothing
    assert result.request()["steps"][0]["kind"] == "manifest"


def test_a_path_that_must_be_absent_is_one_line(tmp_path):
    want = desired(tmp_path)
    old = f"{layout.ETC}/legacy.yml"
    want = dataclasses.replace(want, absent=[old])
    facts = host(want)
    facts["paths"][old] = {"kind": "file", "mode": 0o600, "owner": "root", "group": "root", "sha256": "x"}
    assert removed(plan(want, facts, Secrets())) == {old}
    del facts["paths"][old]
    assert plan(want, facts, Secrets()).changed == []


def test_absent_resources_are_one_line_each_and_plan_as_removals(tmp_path):
    legacy, old_dir, old_unit = f"{layout.ETC}/legacy.yml", f"{layout.OPT}/legacy", "ibgw-legacy.service"
    absent = [File(legacy, present=False), Dir(old_dir, present=False), Unit(old_unit, present=False)]
    want = dataclasses.replace(desired(tmp_path), absent=absent)
    request = facts_request(want, wheels=False)
    assert {legacy, old_dir} <= set(request["paths"]) and old_unit in request["units"]
    facts = host(want)
    facts["paths"][legacy] = {"kind": "file", "mode": 0o600, "owner": "root", "group": "root", "sha256": "x"}
    facts["paths"][old_dir] = {"kind": "dir", "mode": 0o755, "owner": "root", "group": "root", "sha256": None}
    facts["units"][old_unit] = {"enabled": "enabled", "active": "active"}
    result = plan(want, facts, Secrets())
    assert removed(result) == {legacy, old_dir} and stopped(result) == [old_unit]
    assert kinds(result).index("stop") < kinds(result).index("remove")
    out = io.StringIO()
    recap.Recap(console=recap.console_for(out)).show([apply.Report("gw1", result.tasks, checked_only=True)])
    shown = out.getvalue().splitlines()
    assert f"[gw1] would change: file {legacy} (remove: no longer in the inventory)" in shown
    assert (
        f"[gw1] would change: dir {old_dir} (remove with all below it: no longer in the inventory)" in shown
    )
    assert f"[gw1] would change: service {old_unit} (stop and disable: no longer in the inventory)" in shown
    del facts["paths"][legacy], facts["paths"][old_dir]
    facts["units"][old_unit] = {"enabled": "disabled", "active": "inactive"}
    assert plan(want, facts, Secrets()).changed == []


def test_an_absent_unit_ibgw_did_not_make_is_never_stopped(tmp_path):
    want = dataclasses.replace(desired(tmp_path), absent=[Unit("ssh.service", present=False)])
    facts = host(want)
    facts["units"]["ssh.service"] = {"enabled": "enabled", "active": "active"}
    assert stopped(plan(want, facts, Secrets())) == []


def test_decommission_keeps_the_user_and_the_logs_unless_purged(tmp_path):
    want = desired(tmp_path)
    facts = host(want)
    keep = decommission(facts, purge=False)
    assert stopped(keep) == sorted(want.units)
    gone = removed(keep)
    assert {"/etc/ibgw", "/opt/ibgw", "/etc/logrotate.d/ibgw"} <= gone
    assert not any(layout.kept(p) for p in gone) and "userdel" not in kinds(keep)
    (record,) = [s for s in keep.steps() if s["kind"] == "manifest"]
    assert set(record["manifest"]["paths"]) == {layout.HOME, layout.LOG, layout.GATE_STATE} | {
        layout.log_dir(m) for m in ("paper", "live")
    }
    purge = decommission(facts, purge=True)
    assert {layout.HOME, layout.LOG} <= removed(purge) and "userdel" in kinds(purge)
    assert [s["manifest"] for s in purge.steps() if s["kind"] == "manifest"] == [None]
