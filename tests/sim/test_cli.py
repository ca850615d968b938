"""`python -m ibgw_provision.sim` as a process: bad input, logging, admin socket, signals."""

import asyncio
import signal
import socket
import subprocess
import sys
import time

import pytest

from ibgw_provision.tws import Out
from ibgw_provision.tws.probe import probe

from ..kit.sim import STEP, LoggedProcess, RawClient

SIM = [sys.executable, "-m", "ibgw_provision.sim"]
ADMIN = [sys.executable, "-m", "ibgw_provision.sim.admin"]


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--listen", "nowhere", "--mode", "paper"], "HOST:PORT"),
        (["--listen", "127.0.0.1:99999", "--mode", "paper"], "HOST:PORT"),
        (["--listen", "127.0.0.1:0"], "--mode"),
        (["--listen", "127.0.0.1:0", "--mode", "demo"], "demo"),
        (
            ["--listen", "127.0.0.1:0", "--mode", "paper", "--accounts", "U1234567"],
            "paper accounts look like DU",
        ),
        (
            ["--listen", "127.0.0.1:0", "--mode", "live", "--accounts", "DU1234567"],
            "live accounts look like U",
        ),
        (["--listen", "127.0.0.1:0", "--mode", "paper", "--accounts", "DU111,DU111"], "listed twice"),
        (["--listen", "127.0.0.1:0", "--mode", "paper", "--max-version", "100"], "--max-version"),
        (["--listen", "127.0.0.1:0", "--mode", "paper", "--seed", "x"], "--seed"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(args, complaint):
    done = subprocess.run(SIM + args, capture_output=True, text=True, timeout=30)
    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert complaint in done.stderr


def test_a_port_in_use_is_a_clear_error_with_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            SIM + ["--listen", f"127.0.0.1:{port}", "--mode", "paper"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


class SimProcess(LoggedProcess):
    """The simulator in a subprocess."""

    def __init__(self, *args: str):
        super().__init__(SIM + ["--listen", "127.0.0.1:0", *args])

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(STEP)


@pytest.fixture
def live_sim(tmp_path):
    process = SimProcess(
        "--mode", "live", "--admin-socket", str(tmp_path / "admin.sock"), "--restart-downtime", "0.3"
    )
    process.admin = str(tmp_path / "admin.sock")
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(STEP)


def _admin(process: SimProcess, *command: str) -> str:
    done = subprocess.run(ADMIN + [process.admin, *command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_logs_each_connection_and_answers_the_admin_socket(live_sim):
    result = asyncio.run(probe("127.0.0.1", live_sim.port, client_id=9))
    assert result.accounts == ("U1234567",)
    live_sim.wait_for(r"client 9 connected from 127\.0\.0\.1:\d+, server version 200")
    assert _admin(live_sim, "status").startswith("ok listening=1")
    assert live_sim.stop() == 0


def test_sigusr1_simulates_the_daily_restart(live_sim):
    live_sim.proc.send_signal(signal.SIGUSR1)
    live_sim.wait_for(r"daily restart")
    live_sim.wait_for(rf"listening on 127\.0\.0\.1:{live_sim.port}")
    assert asyncio.run(probe("127.0.0.1", live_sim.port, client_id=1)).accounts == ("U1234567",)
    assert live_sim.stop() == 0


def test_sigterm_delivers_messages_already_written_then_exits_0(live_sim):
    async def scenario():
        client = await RawClient.connect(live_sim.port, client_id=3)
        assert _admin(live_sim, "latency", "60000") == "ok latency 60000 ms"  # far beyond any wait here
        client.send(Out.REQ_CURRENT_TIME, 1)
        deadline = time.monotonic() + STEP
        while "delayed=0" in _admin(live_sim, "status"):  # the answer is written, held back by latency
            assert time.monotonic() < deadline, "request never answered"
        live_sim.proc.send_signal(signal.SIGTERM)
        assert int((await client.expect(49))[1]) > 0  # within STEP: only the shutdown can have sent it
        assert await client.read_until_closed() == []
        await client.close()

    asyncio.run(scenario())
    assert live_sim.proc.wait(STEP) == 0
