"""Benchmark: market data ticks per second that `ibgw sim` streams to connected clients.

Starts the simulator in a subprocess, connects raw TWS API clients (the ibgw_provision.tws layer,
no client library in the way), subscribes the gateway's 100 market data lines across them, counts
tick messages over a measured window and prints the figures.

    python bench/sim_ticks.py [--clients 4] [--seconds 5] [--interval 0.01] [--version 226]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import re
import subprocess
import sys
import threading
import time

from ibgw_provision.tws import Hello, In, Out, codec, encode_text, parse_server_hello, read_frame, unframe
from ibgw_provision.tws.versions import MIN_CLIENT, request_is_protobuf

LINES = 100
TICK_IDS = {In.TICK_PRICE, In.TICK_SIZE, In.TICK_OPTION_COMPUTATION, In.TICK_GENERIC, In.TICK_STRING}
_LISTENING = re.compile(rb"listening on [^ ]+:(\d+)")


def start_sim(interval: float) -> tuple[subprocess.Popen, int]:
    """The simulator and its port; a thread reads its log throughout, so it never blocks on a full pipe."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ibgw_provision.sim",
            "--listen",
            "127.0.0.1:0",
            "--mode",
            "paper",
            "--tick-interval",
            str(interval),
        ],
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + 15
    while (left := deadline - time.monotonic()) > 0:
        try:
            match = _LISTENING.search(lines.get(timeout=left))
        except queue.Empty:
            break
        if match:
            return proc, int(match[1])
    proc.kill()
    raise SystemExit("simulator did not start")


def mkt_data_request(version: int, req_id: int, con_id: int) -> bytes:
    if request_is_protobuf(version, Out.REQ_MKT_DATA):
        from ibapi.protobuf.Contract_pb2 import Contract
        from ibapi.protobuf.MarketDataRequest_pb2 import MarketDataRequest

        data = MarketDataRequest(
            reqId=req_id, contract=Contract(conId=con_id, exchange="SMART")
        ).SerializeToString()
        return codec.encode_protobuf(Out.REQ_MKT_DATA, data)
    contract = (con_id, "", "", "", "", "", "", "SMART", "", "", "", "")
    return encode_text(version, Out.REQ_MKT_DATA, (11, req_id, *contract, 0, "", 0, 0, ""))


def start_api(version: int, client_id: int) -> bytes:
    if request_is_protobuf(version, Out.START_API):
        from ibapi.protobuf.StartApiRequest_pb2 import StartApiRequest

        return codec.encode_protobuf(Out.START_API, StartApiRequest(clientId=client_id).SerializeToString())
    return encode_text(version, Out.START_API, (2, client_id, ""))


class Counter:
    def __init__(self):
        self.ticks = self.messages = self.bytes = 0


async def client(
    port: int, client_id: int, con_ids: list[int], version: int, counter: Counter, stop: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(Hello(MIN_CLIENT, version).encode())
    negotiated, _ = parse_server_hello(await asyncio.wait_for(read_frame(reader), 10))
    writer.write(start_api(negotiated, client_id))
    for k, con_id in enumerate(con_ids):
        writer.write(mkt_data_request(negotiated, client_id * 1000 + k, con_id))
    buffer = b""
    while not stop.is_set():
        chunk = await reader.read(1 << 20)
        if not chunk:
            break
        frames, buffer = unframe(buffer + chunk)
        counter.messages += len(frames)
        counter.bytes += len(chunk)
        counter.ticks += sum(codec.decode(negotiated, payload).msg_id in TICK_IDS for payload in frames)
    writer.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args) -> None:
    from ibgw_provision.sim.universe import Universe

    options = [c for c, i in Universe("20250101").instruments.items() if i.is_option][:LINES]
    proc, port = start_sim(args.interval)
    try:
        counter, stop = Counter(), asyncio.Event()
        share = LINES // args.clients
        tasks = [
            asyncio.create_task(
                client(port, n + 1, options[n * share : (n + 1) * share], args.version, counter, stop)
            )
            for n in range(args.clients)
        ]
        await asyncio.sleep(args.warmup)
        ticks0, bytes0, cpu0, t0 = counter.ticks, counter.bytes, cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        ticks, nbytes = counter.ticks - ticks0, counter.bytes - bytes0
        elapsed, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
        stop.set()
        for task in tasks:
            task.cancel()
        print(
            f"clients {args.clients}, lines {share * args.clients}, tick interval {args.interval}s, "
            f"client max version {args.version}"
        )
        print(f"ticks/s        {ticks / elapsed:,.0f}")
        print(f"MB/s           {nbytes / elapsed / 1e6:.2f}")
        print(f"sim CPU        {cpu / elapsed * 100:.0f}% of one core")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=0.01, help="simulator --tick-interval")
    parser.add_argument("--version", type=int, default=226, help="highest version the clients offer")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
