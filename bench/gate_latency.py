"""What the gate costs: reqCurrentTime round trips and relayed tick throughput, in one run, for

    direct    client -> ibgw sim
    haproxy   client -> HAProxy (mode tcp) -> ibgw sim
    gate      client -> ibgw gate -> ibgw sim

Each path runs in its own process (sim, haproxy, gate), the client here. Latency rounds take
turns between the paths, so drift hits them alike. Reports medians and tails, the latency each
relay adds over direct, and the gate's added latency as a multiple of HAProxy's (target <= 1.2).

    .venv/bin/python bench/gate_latency.py [--requests 3000] [--rounds 6] [--seconds 3]
    .venv/bin/python bench/gate_latency.py --profile gate.prof   # the gate under cProfile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ibgw_provision.tws import Hello, In, Out, decode, encode_text, parse_server_hello, read_frame
from ibgw_provision.tws.framing import FrameCounter

PYTHON = sys.executable
CLIENT_VERSION = 200  # text, like the probe
WAIT = 10.0
SUBSCRIPTIONS = 50  # market data lines for the throughput test (the sim allows 100)
TICK_INTERVAL = 0.001


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[:3]} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {WAIT:g}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


HAPROXY_CFG = """global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m
listen tws
    bind 127.0.0.1:{port}
    server sim 127.0.0.1:{upstream}
"""

GATE_CFG = """mode: paper
listen: {{host: 127.0.0.1, port: {port}}}
upstream: {{host: 127.0.0.1, port: {upstream}}}
audit_db: {dir}/gate.sqlite
admin_socket: {dir}/gate.sock
metrics: null
apps:
  - {{name: bench, client_id: 1, sources: [127.0.0.1/32], read_only: false}}
"""


class Processes(contextlib.ExitStack):
    def start(self, args: list[str], port: int) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.callback(self._stop, proc)
        wait_for_port(port, proc)
        return proc

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int):
        self.reader, self.writer, self.version = reader, writer, version

    @classmethod
    async def connect(cls, port: int, client_id: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(Hello(100, CLIENT_VERSION).encode())
        version, _ = parse_server_hello(await read_frame(reader))
        client = cls(reader, writer, version)
        writer.write(encode_text(version, Out.START_API, (2, client_id, "")))
        await client.until(In.NEXT_VALID_ID)
        return client

    async def until(self, msg_id: int) -> None:
        while decode(self.version, await read_frame(self.reader)).msg_id != msg_id:
            pass

    async def round_trip(self) -> float:
        started = time.perf_counter()
        self.writer.write(encode_text(self.version, Out.REQ_CURRENT_TIME, (1,)))
        await self.until(In.CURRENT_TIME)
        return time.perf_counter() - started

    def subscribe(self, req_id: int) -> None:
        self.writer.write(
            encode_text(
                self.version,
                Out.REQ_MKT_DATA,
                (
                    11,
                    req_id,
                    0,
                    "SPY",
                    "STK",
                    "",
                    0.0,
                    "",
                    "",
                    "SMART",
                    "",
                    "USD",
                    "",
                    "",
                    False,
                    "",
                    False,
                    False,
                    "",
                ),
            )
        )

    async def count_messages(self, seconds: float) -> int:
        counter, frames = FrameCounter(), 0
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            with contextlib.suppress(TimeoutError):
                frames += counter.feed(await asyncio.wait_for(self.reader.read(1 << 16), left))
        return frames

    def close(self) -> None:
        self.writer.close()


async def latencies(ports: dict[str, int], requests: int, rounds: int) -> dict[str, list[float]]:
    clients = {name: await Client.connect(port, 1) for name, port in ports.items() if name == "gate"}
    clients |= {
        name: await Client.connect(port, 10 + i)
        for i, (name, port) in enumerate(ports.items())
        if name != "gate"
    }
    samples: dict[str, list[float]] = {name: [] for name in ports}
    for client in clients.values():  # warm up
        for _ in range(200):
            await client.round_trip()
    for _ in range(rounds):
        for name, client in clients.items():
            samples[name] += [await client.round_trip() for _ in range(requests // rounds)]
    for client in clients.values():
        client.close()
    return samples


async def throughput(
    port: int, client_id: int, seconds: float, pid: int | None
) -> tuple[float, float | None]:
    """(messages per second received, CPU share of process `pid` meanwhile)."""
    client = await Client.connect(port, client_id)
    for req_id in range(1, SUBSCRIPTIONS + 1):
        client.subscribe(req_id)
    await client.count_messages(0.5)
    cpu_before, started = cpu_seconds(pid) if pid else 0.0, time.perf_counter()
    messages = await client.count_messages(seconds)
    elapsed = time.perf_counter() - started
    cpu = (cpu_seconds(pid) - cpu_before) / elapsed if pid else None
    client.close()
    return messages / elapsed, cpu


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:7.1f}"


def report(samples: dict[str, list[float]], rates: dict[str, tuple[float, float | None]]) -> None:
    medians = {name: statistics.median(s) for name, s in samples.items()}
    print(f"\nreqCurrentTime round trip, {len(samples['direct'])} per path (microseconds)")
    print(f"{'path':8} {'median':>7} {'p90':>7} {'p99':>7} {'added':>7}   ticks/s   relay CPU")
    for name, s in samples.items():
        q = statistics.quantiles(s, n=100)
        added = medians[name] - medians["direct"]
        rate, cpu = rates[name]
        cpu_text = "-" if cpu is None else f"{cpu * 100:.0f}%"
        print(
            f"{name:8} {micros(medians[name])} {micros(q[89])} {micros(q[98])} "
            f"{micros(added) if name != 'direct' else '      -'}   {rate:7.0f}   {cpu_text:>9}"
        )
    haproxy_added = medians["haproxy"] - medians["direct"]
    gate_added = medians["gate"] - medians["direct"]
    ratio = gate_added / haproxy_added if haproxy_added > 0 else float("inf")
    print(
        f"\ngate adds {gate_added * 1e6:.1f} us, HAProxy {haproxy_added * 1e6:.1f} us: "
        f"{ratio:.2f}x (target <= 1.2x) -> {'met' if ratio <= 1.2 else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="round trips per path")
    parser.add_argument("--rounds", type=int, default=6, help="turns the paths take")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput window per path")
    parser.add_argument("--profile", metavar="FILE", help="run the gate under cProfile, stats to FILE")
    args = parser.parse_args()
    ports = {"direct": free_port(), "haproxy": free_port(), "gate": free_port()}
    with tempfile.TemporaryDirectory(prefix="ibgw-bench-") as tmp, Processes() as procs:
        sim = procs.start(
            [
                PYTHON,
                "-m",
                "ibgw_provision.sim",
                "--listen",
                f"127.0.0.1:{ports['direct']}",
                "--mode",
                "paper",
                "--tick-interval",
                str(TICK_INTERVAL),
            ],
            ports["direct"],
        )
        haproxy_cfg = Path(tmp, "haproxy.cfg")
        haproxy_cfg.write_text(HAPROXY_CFG.format(port=ports["haproxy"], upstream=ports["direct"]))
        haproxy = procs.start(["haproxy", "-db", "-f", str(haproxy_cfg)], ports["haproxy"])
        gate_cfg = Path(tmp, "gate.yml")
        gate_cfg.write_text(GATE_CFG.format(port=ports["gate"], upstream=ports["direct"], dir=tmp))
        profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        gate = procs.start(
            [PYTHON, *profile, "-m", "ibgw_provision.gate", "gate", "--config", str(gate_cfg)], ports["gate"]
        )
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        print(
            f"sim pid {sim.pid}, haproxy pid {haproxy.pid}, gate pid {gate.pid} ({loop} event loop); "
            f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}"
        )
        samples = asyncio.run(latencies(ports, args.requests, args.rounds))
        pids = {"direct": None, "haproxy": haproxy.pid, "gate": gate.pid}
        rates = {
            name: asyncio.run(throughput(port, 1 if name == "gate" else 20, args.seconds, pids[name]))
            for name, port in ports.items()
        }
    report(samples, rates)


if __name__ == "__main__":
    main()
