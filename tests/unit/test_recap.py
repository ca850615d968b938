"""What `ibgw provision` prints: tasks, diffs, failures, the PLAY RECAP and the live progress rows."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from ibgw_provision.provision.apply import Report
from ibgw_provision.provision.plan import Task
from ibgw_provision.provision.recap import Recap

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DIFF = (
    "--- /etc/haproxy/haproxy.cfg (host)\n+++ /etc/haproxy/haproxy.cfg (ibgw)\n-maxconn 128\n+maxconn 256\n"
)


def shown(reports: list[Report], **options) -> tuple[int, str]:
    out = io.StringIO()
    code = Recap(console=Console(file=out, width=100, color_system=None), **options).show(reports)
    return code, out.getvalue()


def converged() -> Report:
    return Report(
        "gw1", [Task("package haproxy", False), Task("user ibkr", False)], round_trips=2, seconds=0.83
    )


def changed() -> Report:
    return Report(
        "gw2",
        [
            Task("package haproxy", False),
            Task("file /etc/haproxy/haproxy.cfg", True, "content differs (drift or a new render)", DIFF),
            Task("service haproxy.service", True, "reload"),
        ],
        round_trips=3,
        seconds=4.06,
    )


def test_a_converged_host_prints_only_the_recap():
    code, out = shown([converged()])
    assert code == 0
    assert out.splitlines() == [
        "PLAY RECAP                                               ",
        "host  ok  changed  unreachable  failed  round trips  time",
        "gw1    2        0            0       0            2  0.8s",
    ]


def test_changes_are_listed_per_host_then_counted():
    code, out = shown([converged(), changed()])
    assert code == 0
    lines = [line.rstrip() for line in out.splitlines()]
    assert lines[:2] == [
        "[gw2] changed: file /etc/haproxy/haproxy.cfg (content differs (drift or a new render))",
        "[gw2] changed: service haproxy.service (reload)",
    ]
    assert lines[-2:] == [
        "gw1    2        0            0       0            2  0.8s",
        "gw2    1        2            0       0            3  4.1s",
    ]
    assert "maxconn" not in out  # diffs only when asked


def test_diffs_and_ok_tasks_on_request():
    _, out = shown([changed()], show_diff=True, verbose=True)
    assert out.splitlines()[:7] == [
        "[gw2] ok: package haproxy",
        "[gw2] changed: file /etc/haproxy/haproxy.cfg (content differs (drift or a new render))",
        *DIFF.splitlines(),
        "[gw2] changed: service haproxy.service (reload)",
    ]


def test_a_diff_without_a_final_newline_is_ended():
    report = Report(
        "gw1", [Task("file /etc/x", True, "create", "+x"), Task("file /etc/y", True, "create", "")]
    )
    _, out = shown([report], show_diff=True)
    assert out.splitlines()[:3] == [
        "[gw1] changed: file /etc/x (create)",
        "+x",
        "[gw1] changed: file /etc/y (create)",
    ]


def test_a_failed_host_is_named_counted_and_fails_the_run():
    failed = Report(
        "gw3",
        [Task("user ibkr", True, "create")],
        failed="file /etc/x: haproxy -c exited 1: bad",
        round_trips=3,
        seconds=2.0,
    )
    code, out = shown([converged(), failed])
    assert code == 1
    assert "[gw3] FAILED: file /etc/x: haproxy -c exited 1: bad" in out.splitlines()
    assert out.splitlines()[-1].split() == ["gw3", "0", "1", "0", "1", "3", "2.0s"]


def test_check_mode_says_what_would_change_and_that_nothing_did():
    report = changed()
    report.checked_only = True
    code, out = shown([report])
    assert code == 0
    assert out.splitlines()[0] == (
        "[gw2] would change: file /etc/haproxy/haproxy.cfg (content differs (drift or a new render))"
    )
    assert out.splitlines()[-1] == "check mode: nothing was changed"


def coloured(colour: int, count: int, row: str) -> bool:
    return re.search(rf"\x1b\[{colour}m *{count}\x1b\[0m", row) is not None


def test_counts_are_coloured_by_outcome():
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system="standard")
    failed = Report("gw3", [Task("user ibkr", True, "create")], failed="boom")
    Recap(console=console).show([converged(), failed])
    rows = out.getvalue().splitlines()
    assert "\x1b[31m[gw3] FAILED: boom" in rows[1]  # red
    gw1, gw3 = rows[-2], rows[-1]
    assert coloured(32, 2, gw1) and not coloured(33, 0, gw1)  # ok in green; no change is not yellow
    assert coloured(33, 1, gw3) and coloured(31, 1, gw3)  # changed in yellow, failed in red


@pytest.mark.parametrize("hosts", [["gw1"], ["gw1", "gw2"]])
def test_progress_shows_a_row_per_host_then_clears_it(hosts):
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system="standard")
    with Recap(console=console).progress(hosts) as update:
        for host in hosts:
            update(host, f"{host}: reading facts")
    text = ANSI.sub("", out.getvalue())
    for host in hosts:
        assert re.search(rf"{host} connecting", text) and re.search(rf"{host} {host}: reading facts", text)
    assert out.getvalue().endswith("\x1b[1A\x1b[2K" * len(hosts))  # transient: the rows are erased
    with pytest.raises(KeyError), Recap(console=console).progress(["gw1"]) as update:
        update("gw9", "unknown host")
