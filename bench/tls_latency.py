"""What front.tls costs, in one run: reqCurrentTime round trips and the time to log on, for

    plain   client -> HAProxy (PROXY v2) -> ibgw gate -> ibgw sim
    tls     client -> ibgw tunnel -> HAProxy (PROXY v2) -> ibgw gate (TLS 1.3, client cert) -> ibgw sim

Every part is its own process (sim, two HAProxys, two gates, the tunnel); the client is here.
Round trips take turns between the paths, so drift hits both alike. Logon: connect, handshake,
START_API, until nextValidId (through the tunnel, that includes the TLS handshake with the gate).
The TLS handshake alone is timed too: a TLS 1.3 connection straight to the TLS front.

    .venv/bin/python bench/tls_latency.py [--requests 3000] [--rounds 6] [--logons 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gate_latency import HAPROXY_CFG, PYTHON, Client, Processes, free_port

from ibgw_provision.pki.ca import Pki

GATE_CFG = """mode: paper
listen: {{host: 127.0.0.1, port: {port}}}
front_socket: {{path: {dir}/{name}.front}}
upstream: {{host: 127.0.0.1, port: {upstream}}}
audit_db: {dir}/{name}.sqlite
admin_socket: {dir}/{name}.sock
metrics: null
{tls}apps:
  - {{name: bench, client_id: {client_id}, sources: [127.0.0.1/32], read_only: false}}
"""
CLIENT_IDS = {"plain": 1, "tls": 11}  # one gateway behind both gates: distinct client ids


def haproxy_cfg(port: int, front_socket: str) -> str:
    """HAProxy in front of a gate's front socket, with PROXY v2 headers (as provisioning renders it)."""
    return HAPROXY_CFG.format(port=port, upstream=0).replace(
        "server sim 127.0.0.1:0", f"server gate unix@{front_socket} send-proxy-v2"
    )


async def latencies(ports: dict[str, int], requests: int, rounds: int) -> dict[str, list[float]]:
    clients = {name: await Client.connect(port, CLIENT_IDS[name]) for name, port in ports.items()}
    samples: dict[str, list[float]] = {name: [] for name in ports}
    for client in clients.values():  # warm up
        for _ in range(200):
            await client.round_trip()
    for _ in range(rounds):
        for name, client in clients.items():
            samples[name] += [await client.round_trip() for _ in range(requests // rounds)]
    for client in clients.values():
        client.close()
    await asyncio.sleep(0.2)  # the gates see these clients go before the logons reuse their ids
    return samples


async def logons(ports: dict[str, int], count: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in ports}
    for _ in range(count):
        for name, port in ports.items():
            started = time.perf_counter()
            client = await Client.connect(port, CLIENT_IDS[name])
            samples[name].append(time.perf_counter() - started)
            client.close()
            await asyncio.sleep(0.02)  # let the gate see the close before the same client id returns
    return samples


async def tls_handshakes(port: int, context: ssl.SSLContext, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
        samples.append(time.perf_counter() - started)
        writer.close()
    return samples


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="round trips per path")
    parser.add_argument("--rounds", type=int, default=6, help="turns the paths take")
    parser.add_argument("--logons", type=int, default=200, help="logons (and TLS handshakes) per path")
    args = parser.parse_args()
    p = {k: free_port() for k in ("sim", "gate", "gate_tls", "front", "front_tls", "tunnel")}
    with tempfile.TemporaryDirectory(prefix="ibgw-bench-") as tmp, Processes() as procs:
        ca = Pki(Path(tmp, "pki"))
        ca.init("bench")
        ca.issue_server("front", "127.0.0.1")
        cert_dir = ca.issue_app("bench")
        server = ca.server_dir("front")
        files = f"ca: {ca.ca_cert}, crl: {ca.crl}, cert: {server / 'cert.pem'}, key: {server / 'key.pem'}"
        tls = f"tls: {{{files}}}\n"
        procs.start(
            [PYTHON, "-m", "ibgw_provision.sim", "--listen", f"127.0.0.1:{p['sim']}", "--mode", "paper"],
            p["sim"],
        )
        for name, gate_tls, client_id in (("gate", "", 1), ("gate_tls", tls, 11)):
            cfg = Path(tmp, f"{name}.yml")
            values = {"port": p[name], "upstream": p["sim"], "dir": tmp, "name": name}
            cfg.write_text(GATE_CFG.format(**values, tls=gate_tls, client_id=client_id))
            procs.start([PYTHON, "-m", "ibgw_provision.gate", "gate", "--config", str(cfg)], p[name])
        for front, gate in (("front", "gate"), ("front_tls", "gate_tls")):
            cfg = Path(tmp, f"{front}.cfg")
            cfg.write_text(haproxy_cfg(p[front], f"{tmp}/{gate}.front"))
            procs.start(["haproxy", "-db", "-f", str(cfg)], p[front])
        tunnel = [PYTHON, "-m", "ibgw_provision", "tunnel", "--front", f"127.0.0.1:{p['front_tls']}"]
        tunnel += ["--cert", str(cert_dir), "--listen", f"127.0.0.1:{p['tunnel']}"]
        procs.start(tunnel, p["tunnel"])
        print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}; {ssl.OPENSSL_VERSION}")
        paths = {"plain": p["front"], "tls": p["tunnel"]}
        rtt = asyncio.run(latencies(paths, args.requests, args.rounds))
        logon = asyncio.run(logons(paths, args.logons))
        context = ssl.create_default_context(cafile=ca.ca_cert)
        context.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")
        handshake = asyncio.run(tls_handshakes(p["front_tls"], context, args.logons))
    med = {name: statistics.median(s) for name, s in rtt.items()}
    print(f"\nreqCurrentTime round trip, {len(rtt['plain'])} per path (milliseconds)")
    print(f"{'path':6} {'median':>8} {'p90':>8} {'p99':>8}")
    for name, s in rtt.items():
        q = statistics.quantiles(s, n=100)
        print(f"{name:6} {ms(med[name])} {ms(q[89])} {ms(q[98])}")
    print(f"tunnel + TLS add {(med['tls'] - med['plain']) * 1e6:.1f} us per round trip (median)")
    print(f"\nlogon to nextValidId, {args.logons} per path (median ms)")
    for name, s in logon.items():
        print(f"{name:6} {ms(statistics.median(s))}")
    print(f"TLS 1.3 handshake with the gate through HAProxy (median ms): {ms(statistics.median(handshake))}")


if __name__ == "__main__":
    main()
