"""Benchmark: a no-op `ibgw provision` of the lab's gw through the bastion, against the floor.

The floor is OpenSSH doing the least the same way: `ssh -F build/lab/ssh_config lab-gw true`
(as admin, ProxyJump through the bastion: one connection per hop and one command). Both run in
the same process tree, alternately, so that they share the machine's load. Each ibgw run is the
real command line (Python's start and ibgw's imports included), with `--json`; its round trips
come from that report, and a run that changes anything or fails stops the bench.

Needs root and the lab: if the lab is not up, this brings it up and takes it down at the end.
gw is converged once first (a fresh gw waits out its first-boot dpkg lock).
Usage: .venv/bin/python bench/lab_noop.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "tests" / "lab" / "lab"
INVENTORY = ROOT / "inventories" / "lab.yml"
SSH_CONFIG = ROOT / "build" / "lab" / "ssh_config"
IBGW = Path(sys.executable).parent / "ibgw"
NO_SSH_CONFIG = "/dev/null"  # the operator's ~/.ssh/config must not change ibgw's side (ssh -F ignores it)
RUN_TIMEOUT = 600  # seconds: the first converge installs packages through the lab's proxy


def provision(check_noop: bool) -> tuple[float, dict]:
    """One `ibgw provision gw --json` through the bastion: its wall time and gw's report."""
    argv = [str(IBGW), "provision", "gw", "-i", str(INVENTORY), "--json", "--ssh-config", NO_SSH_CONFIG]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"ibgw provision failed (exit {proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    (report,) = [h for h in json.loads(proc.stdout)["hosts"] if h["host"] == "gw"]
    if check_noop and report["changed"]:
        changed = [t["name"] for t in report["tasks"] if t["changed"]]
        raise SystemExit(f"not a no-op: {report['changed']} changed: {changed}")
    return elapsed, report


def floor() -> float:
    """One `ssh -F build/lab/ssh_config lab-gw true`: admin on gw through the bastion."""
    argv = ["ssh", "-F", str(SSH_CONFIG), "lab-gw", "true"]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"ssh lab-gw true failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def summary(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs": len(times),
    }


def measure(runs: int) -> dict:
    first_s, first = provision(check_noop=False)
    provision(check_noop=True)  # warm: the operator's wheel cache, the page cache on both sides
    floor()
    ibgw_times, ssh_times, trips = [], [], []
    for _ in range(runs):  # alternately, so that both see the same load
        elapsed, report = provision(check_noop=True)
        ibgw_times.append(elapsed)
        trips.append(report["round_trips"])
        ssh_times.append(floor())
    ibgw, ssh = summary(ibgw_times), summary(ssh_times)
    return {
        "converge": {"changed": first["changed"], "round_trips": first["round_trips"], "seconds": first_s},
        "noop": ibgw | {"round_trips": sorted(set(trips)), "tasks": len(report["tasks"])},
        "floor": ssh | {"command": f"ssh -F {SSH_CONFIG.relative_to(ROOT)} lab-gw true"},
        "ratio": ibgw["median_s"] / ssh["median_s"],
    }


def lab_up() -> bool:
    """Bring the lab up unless it is; whether this started it."""
    if subprocess.run([str(LAB), "status"], capture_output=True, timeout=60).returncode == 0:
        return False
    proc = subprocess.run([str(LAB), "up"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"tests/lab/lab up failed: {proc.stderr[-2000:]}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed no-op runs (default 10)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    started = lab_up()
    try:
        result = measure(args.runs)
    finally:
        if started:
            subprocess.run([str(LAB), "down"], capture_output=True, timeout=120)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    c, n, f = result["converge"], result["noop"], result["floor"]
    print(f"converge: {c['changed']} changed, {c['round_trips']} round trips, {c['seconds']:.1f} s")
    print(
        f"no-op ibgw provision gw through the bastion x{n['runs']}: {n['tasks']} tasks, "
        f"round trips {n['round_trips']}, median {n['median_s'] * 1000:.0f} ms "
        f"(min {n['min_s'] * 1000:.0f}, max {n['max_s'] * 1000:.0f})"
    )
    print(
        f"floor `{f['command']}` x{f['runs']}: median {f['median_s'] * 1000:.0f} ms "
        f"(min {f['min_s'] * 1000:.0f}, max {f['max_s'] * 1000:.0f})"
    )
    print(f"ratio of medians (ibgw / ssh): {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
