"""Fixtures for tests that run a simulator or a gate: each one started stops at teardown, and the
teardown fails if it logged an error."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .gate import RunningGate, config_data
from .sim import RunningSim


def _stop_all(running: list) -> None:
    failures = []
    for server in running:
        try:
            server.stop()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, failures


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to about 100 bytes."""
    with tempfile.TemporaryDirectory(prefix="ibgw-gate-") as path:
        yield Path(path)


@pytest.fixture
def start_sim() -> Iterator[Callable[..., RunningSim]]:
    """Start simulators (on 127.0.0.1, a free port) with SimConfig overrides."""
    running: list[RunningSim] = []

    def start(**config) -> RunningSim:
        running.append(RunningSim(**config))
        return running[-1]

    yield start
    _stop_all(running)


@pytest.fixture
def sim(start_sim) -> RunningSim:
    return start_sim()


@pytest.fixture
def start_gate(short_dir) -> Iterator[Callable[..., RunningGate]]:
    """Start gates in front of a gateway port, with config overrides."""
    running: list[RunningGate] = []

    def start(upstream_port: int, **overrides) -> RunningGate:
        running.append(RunningGate(config_data(short_dir, upstream_port, **overrides)))
        return running[-1]

    yield start
    _stop_all(running)


@pytest.fixture
def gate(start_gate, sim) -> RunningGate:
    return start_gate(sim.port)
