"""Benchmark: the first `ibgw provision` of a fresh lab gw, per Debian release, through the bastion.

Each run reboots gw from its clean rootfs (`tests/lab/lab --release R reset`: a fresh host whose
first-boot unit holds the dpkg lock for about 20 s, as cloud-init and unattended-upgrades do) and
times the real command line until gw has converged; the wait for the lock is part of it, as it is
on a fresh cloud image. The operator's wheel cache is warmed first, so a run measures the host's
side (apt through the lab's proxy, uploads, installs, units), not building wheels.

Needs root and the lab: brought up if it is not, and taken down at the end if this started it.
Usage: .venv/bin/python bench/lab_first_converge.py [--runs N] [--release trixie,bookworm] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

from lab_noop import LAB, lab_up, provision

RELEASES = ("trixie", "bookworm")


def reset(release: str) -> None:
    """A fresh gw of this release (its rootfs is built once, on first use)."""
    proc = subprocess.run(
        [str(LAB), "--release", release, "reset"], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise SystemExit(f"tests/lab/lab --release {release} reset failed: {proc.stderr[-2000:]}")


def measure(release: str, runs: int) -> dict:
    reset(release)
    provision(check_noop=False)  # warms the wheel cache for this release's Python
    times, changed, trips = [], set(), set()
    for _ in range(runs):
        reset(release)
        elapsed, report = provision(check_noop=False)
        times.append(elapsed)
        changed.add(report["changed"])
        trips.add(report["round_trips"])
    return {
        "release": release,
        "runs": runs,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "changed": sorted(changed),
        "round_trips": sorted(trips),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed first converges per release (default 3)")
    parser.add_argument("--release", default=",".join(RELEASES), help="comma-separated (default: both)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    releases = args.release.split(",")
    if args.runs < 1 or not set(releases) <= set(RELEASES):
        parser.error(f"--runs must be at least 1 and --release among {', '.join(RELEASES)}")
    started = lab_up()
    results = []
    try:
        results = [measure(release, args.runs) for release in releases]
    finally:
        reset(RELEASES[0])  # the lab's default gw again
        if started:
            subprocess.run([str(LAB), "down"], capture_output=True, timeout=120)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(
            f"first converge, {r['release']} x{r['runs']}: median {r['median_s']:.1f} s "
            f"(min {r['min_s']:.1f}, max {r['max_s']:.1f}); changed {r['changed']}, "
            f"round trips {r['round_trips']}"
        )


if __name__ == "__main__":
    main()
