"""The memory budget: heaps plus per-process overhead against the host's MemTotal."""

from __future__ import annotations

import pytest

from ibgw_provision import inventory
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import apply, memory, recap
from tests.conftest import INVENTORIES

T3_SMALL_MB = 1900  # 2 GiB less what the kernel reserves: MemTotal on a t3.small is about 1.9 GiB
DEBIAN_12 = {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"}


@pytest.fixture
def example():
    return inventory.load(INVENTORIES / "example.yml")


def with_heaps(inv, **heaps):
    host = inv.hosts["gw1"]
    gateways = [g.model_copy(update={"java_heap": heaps.get(g.mode, g.java_heap)}) for g in host.gateways]
    return host.model_copy(update={"gateways": gateways})


@pytest.mark.parametrize("text, mb", [("768m", 768), ("1g", 1024), ("2G", 2048), ("512M", 512)])
def test_heaps_are_read_as_java_reads_them(text, mb):
    assert memory.heap_mb(text) == mb


def test_the_budget_lists_every_process(example):
    items = dict(memory.budget(example.hosts["gw1"]))
    assert items == {
        "OS": 200,
        "IB Gateway paper (heap 384m + JVM 250)": 634,
        "Xvfb paper": 30,
        "ibgw gate paper": 70,
        "IB Gateway live (heap 384m + JVM 250)": 634,
        "Xvfb live": 30,
        "ibgw gate live": 70,
        "haproxy": 20,
    }


def test_the_shipped_example_fits_a_t3_small_with_a_warning(example):
    warning = memory.check("gw1", example.hosts["gw1"], T3_SMALL_MB)
    assert warning == (
        "gw1: needs about 1688 MB (gateways with java_heap paper 384m, live 384m and their "
        "overhead): 88% of its 1900 MB; little room is left"
    )


def test_ibs_default_heaps_do_not_fit_and_are_refused_naming_the_gateways(example):
    host = with_heaps(example, paper="768m", live="1024m")
    with pytest.raises(memory.OverBudget) as refused:
        memory.check("gw1", host, T3_SMALL_MB)
    assert str(refused.value) == (
        "gw1: needs about 2712 MB (gateways with java_heap paper 768m, live 1024m and their overhead), "
        "more than "
        "its 1900 MB (MemTotal, no swap assumed): lower the gateways' java_heap or use a larger host"
    )
    assert memory.check("gw1", host, 4 * 1024 - 100) is None  # a t3.medium holds them


def test_the_simulator_host_is_small():
    inv = inventory.load(INVENTORIES / "local.yml")
    assert memory.check("local", inv.hosts["local"], T3_SMALL_MB) is None
    assert sum(mb for _, mb in memory.budget(inv.hosts["local"])) < 600


def test_no_memory_fact_no_check(example):
    assert memory.check("gw1", with_heaps(example, live="64g"), None) is None


class FakeTransport:
    def __init__(self, target):
        self.target, self.round_trips = target, 0
        self.login_user = target.user or "root"  # as the real one says once connected

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_provision_refuses_an_undersized_host_before_changing_anything(example, monkeypatch):
    example.hosts["gw1"] = with_heaps(example, paper="768m", live="1024m")
    calls = []

    def agent(transport, request, **kw):
        calls.append(request["op"])
        return {
            "os": DEBIAN_12,
            "memory_mb": T3_SMALL_MB,
            "python": "3.11.2",
            "glibc": "2.36",
            "arch": "x86_64",
        }

    monkeypatch.setattr(apply, "Transport", FakeTransport)
    monkeypatch.setattr(apply, "call_agent", agent)
    monkeypatch.setattr(apply, "Secrets", lambda: Secrets(masked=True))  # no real logins here
    events = []
    (report,) = apply.provision(example, ["gw1"], apply.Options(on_event=lambda h, m: events.append(m)))
    assert calls == ["facts"] and events == ["reading facts"]  # no wheels built, no apply
    assert report.refused and "paper 768m, live 1024m" in report.failed and not report.tasks
    assert recap.exit_code([report]) == 2
    assert recap.as_json([report])["hosts"][0]["status"] == "refused"


def test_a_tight_host_is_provisioned_with_a_warning_shown_as_it_happens(example, monkeypatch):
    monkeypatch.setattr(apply, "Transport", FakeTransport)
    monkeypatch.setattr(
        apply,
        "call_agent",
        lambda transport, request, **kw: {
            "os": DEBIAN_12,
            "memory_mb": T3_SMALL_MB,
            "python": "3.11.2",
            "glibc": "2.36",
            "arch": "x86_64",
        },
    )
    monkeypatch.setattr(apply, "Secrets", lambda: Secrets(masked=True))

    def no_wheels(*args):
        raise apply.wheelhouse.WheelhouseError("stopped here by the test")

    monkeypatch.setattr(apply.wheelhouse, "build", no_wheels)
    events = []
    (report,) = apply.provision(example, ["gw1"], apply.Options(on_event=lambda h, m: events.append(m)))
    assert report.warnings and report.warnings[0].startswith("gw1: needs about 1688 MB")
    assert f"warning: {report.warnings[0]}" in events
    assert not report.refused and report.failed == "stopped here by the test"
