"""The time and duration formats recap, health, monitor, apps and gate status share."""

from __future__ import annotations

import pytest

from ibgw_provision import timefmt


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "never"),
        (0, "now"),
        (1.9, "now"),
        (-5, "now"),
        (2, "2s ago"),
        (119, "119s ago"),
        (120, "2m ago"),
        (7199, "119m ago"),
        (7200, "2h ago"),
        (90000, "25h ago"),
    ],
)
def test_ago(seconds, shown):
    now = 1_750_000_000.0
    assert timefmt.ago(None if seconds is None else now - seconds, now=now) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0, "-"), (59, "00h00m"), (3660, "01h01m"), (86399, "23h59m"), (86400 * 3.5, "3.5d")],
)
def test_uptime(seconds, shown):
    assert timefmt.uptime(seconds) == shown


def test_elapsed():
    assert timefmt.elapsed(2.34) == "2.3s"
