"""The test kit: run the simulator and the gate in-process or as processes, and talk to them with
raw frames, ibapi and ib_async. Its fixtures (kit.fixtures) are registered once, in tests/conftest.py."""
