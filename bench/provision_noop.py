"""Benchmark: a no-op `ibgw provision` of a converged host, wall time and SSH round trips.

Boots the disposable test host (tests/host/testhost.sh), converges it from
inventories/local.yml, then times RUNS no-op runs. Usage:
    .venv/bin/python bench/provision_noop.py [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from ibgw_provision import inventory
from ibgw_provision.provision.apply import Options, provision_host

ROOT = Path(__file__).resolve().parent.parent
TESTHOST = ROOT / "tests" / "host" / "testhost.sh"


def main(runs: int) -> None:
    subprocess.run([str(TESTHOST), "up"], check=True, capture_output=True, timeout=900)
    inv = inventory.load(ROOT / "inventories" / "local.yml")
    first = provision_host(inv, "local", Options())
    assert not first.failed, first.failed
    print(
        f"converge: {first.changed} changed of {len(first.tasks)} tasks, "
        f"{first.round_trips} round trips, {first.seconds:.2f} s"
    )
    times, trips = [], set()
    for _ in range(runs):
        started = time.perf_counter()
        report = provision_host(inv, "local", Options())
        times.append(time.perf_counter() - started)
        trips.add(report.round_trips)
        assert report.changed == 0 and not report.failed, [t.name for t in report.tasks if t.changed]
    print(
        f"no-op x{runs}: {len(report.tasks)} tasks, round trips {sorted(trips)}, wall time "
        f"median {statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms (SSH connect included)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
