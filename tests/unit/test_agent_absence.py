"""The agent's removal steps and its manifest, run in a temporary directory standing in for the host."""

from __future__ import annotations

import json
import os

import pytest

from ibgw_provision.provision import agent, layout


@pytest.fixture
def places(tmp_path, monkeypatch):
    """ibgw's places, moved under tmp_path: etc, opt, lib, log, units/ibgw-, logrotate."""
    roots = [tmp_path / n for n in ("etc", "opt", "lib", "log")]
    for root in roots:
        root.mkdir()
    (tmp_path / "units").mkdir()
    prefixes = tuple(str(r) for r in roots) + (f"{tmp_path}/units/ibgw-", f"{tmp_path}/logrotate")
    monkeypatch.setattr(agent, "REMOVABLE", prefixes)
    return tmp_path


def remove(path, tree=False):
    agent.step_remove({"kind": "remove", "task": "t", "path": str(path), "tree": tree})


def test_the_agent_and_layout_agree_on_ibgws_places():
    assert agent.REMOVABLE == layout.REMOVABLE


def test_a_file_a_tree_and_an_empty_directory_are_removed(places):
    secret = places / "etc" / "live" / "config.ini"
    secret.parent.mkdir()
    secret.write_text("IbPassword=x\n")
    unit = places / "units" / "ibgw-gateway-live.service"
    unit.write_text("[Unit]\n")
    remove(unit)
    remove(secret.parent, tree=True)
    empty = places / "opt" / "wheels"
    empty.mkdir()
    remove(empty)
    assert not unit.exists() and not secret.parent.exists() and not empty.exists()
    remove(unit)  # already gone: nothing to do


def test_a_container_that_still_holds_something_stays(places):
    (places / "opt" / "mine").mkdir()
    (places / "opt" / "mine" / "admins-file").write_text("x")
    remove(places / "opt" / "mine")
    assert (places / "opt" / "mine" / "admins-file").exists()


def test_a_symlink_is_removed_never_followed(places):
    outside = places / "precious"
    outside.mkdir()
    (outside / "data").write_text("keep")
    link = places / "lib" / "live"
    link.symlink_to(outside)
    remove(link, tree=True)
    assert not os.path.lexists(link) and (outside / "data").read_text() == "keep"


def test_a_symlink_on_the_way_is_refused(places):
    outside = places / "precious"
    outside.mkdir()
    (outside / "jts.ini").write_text("keep")
    (places / "lib" / "live").symlink_to(outside)
    with pytest.raises(agent.StepError, match="symlink"):
        remove(places / "lib" / "live" / "jts.ini")
    assert (outside / "jts.ini").read_text() == "keep"


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "{t}/etc/../precious", "{t}/etcx", "{t}/units/haproxy.service"]
)
def test_a_path_outside_ibgws_places_is_refused(places, path):
    (places / "precious").write_text("keep")
    (places / "etcx").write_text("keep")
    with pytest.raises(agent.StepError, match="not one of ibgw's places"):
        remove(path.format(t=places))
    assert (places / "precious").exists() and (places / "etcx").exists()


def test_the_manifest_is_written_private_and_read_back(tmp_path):
    path = tmp_path / "admin" / "manifest.json"
    entries = {"paths": ["/etc/ibgw"], "units": ["haproxy.service"], "firewall": False, "installs": {}}
    agent.step_manifest({"kind": "manifest", "task": "t", "path": str(path), "manifest": entries})
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert agent.manifest(str(path)) == entries
    agent.step_manifest({"kind": "manifest", "task": "t", "path": str(path), "manifest": None})
    assert not path.exists() and agent.manifest(str(path)) is None


def test_a_manifest_others_could_write_is_not_trusted(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"paths": ["/etc"], "units": [], "firewall": False, "installs": {}}))
    path.chmod(0o644)
    assert agent.manifest(str(path)) is None
    path.chmod(0o600)
    assert agent.manifest(str(path)) is not None
    os.chown(path, 65534, 65534)  # nobody's
    assert agent.manifest(str(path)) is None
    link = tmp_path / "link.json"
    link.symlink_to(path)
    assert agent.manifest(str(link)) is None
    path.write_text("[1, 2]")
    os.chown(path, 0, 0)
    assert agent.manifest(str(path)) is None
