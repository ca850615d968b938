import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sim"))  # simkit: the simulator's test kit

from simkit import RunningSim  # noqa: E402

from .gatekit import RunningGate, config_data  # noqa: E402


@pytest.fixture
def short_dir():
    """A directory with a short path: Unix socket paths are limited to about 100 bytes."""
    with tempfile.TemporaryDirectory(prefix="ibgw-gate-") as path:
        yield Path(path)


@pytest.fixture
def start_sim():
    running: list[RunningSim] = []

    def start(**config) -> RunningSim:
        running.append(RunningSim(**config))
        return running[-1]

    yield start
    for sim in running:
        sim.stop()


@pytest.fixture
def sim(start_sim) -> RunningSim:
    return start_sim()


@pytest.fixture
def start_gate(short_dir):
    """Start gates in front of a gateway port, with config overrides; all stop at teardown."""
    running: list[RunningGate] = []

    def start(upstream_port: int, **overrides) -> RunningGate:
        running.append(RunningGate(config_data(short_dir, upstream_port, **overrides)))
        return running[-1]

    yield start
    for gate in running:
        gate.stop()


@pytest.fixture
def gate(start_gate, sim) -> RunningGate:
    return start_gate(sim.port)
