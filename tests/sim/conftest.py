import pytest
from simkit import RunningSim


@pytest.fixture
def start_sim():
    """Start simulators (on 127.0.0.1, a free port) with SimConfig overrides; all stop at teardown,
    which fails if a simulator logged an error."""
    running: list[RunningSim] = []

    def start(**config) -> RunningSim:
        sim = RunningSim(**config)
        running.append(sim)
        return sim

    yield start
    failures = []
    for sim in running:
        try:
            sim.stop()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, failures


@pytest.fixture
def sim(start_sim) -> RunningSim:
    return start_sim()
