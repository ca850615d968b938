import pytest
from simkit import RunningSim


@pytest.fixture
def start_sim():
    """Start simulators (on 127.0.0.1, a free port) with SimConfig overrides; all stop at teardown."""
    running: list[RunningSim] = []

    def start(**config) -> RunningSim:
        sim = RunningSim(**config)
        running.append(sim)
        return sim

    yield start
    for sim in running:
        sim.stop()


@pytest.fixture
def sim(start_sim) -> RunningSim:
    return start_sim()
