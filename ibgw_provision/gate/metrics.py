"""Prometheus text exposition of the gate's state, served at GET /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from .state import GateState

if sys.version_info >= (3, 11):
    from asyncio import timeout as aio_timeout
else:  # Python 3.10 (Ubuntu 22.04's): the same context manager from async-timeout
    from async_timeout import timeout as aio_timeout

REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 8192
_APP_METRICS = (
    ("ibgw_gate_app_connected", "gauge", "1 while the app is connected through the gate", "connected"),
    ("ibgw_gate_app_last_seen_seconds", "gauge", "Unix time of the app's last message", "last_seen"),
    ("ibgw_gate_app_messages_in_total", "counter", "Messages from the app to the gateway", "messages_in"),
    ("ibgw_gate_app_messages_out_total", "counter", "Messages from the gateway to the app", "messages_out"),
    ("ibgw_gate_app_orders_forwarded_total", "counter", "Order requests forwarded", "orders_forwarded"),
    ("ibgw_gate_app_orders_refused_total", "counter", "Order requests refused", "orders_refused"),
)


def render(gate: GateState) -> str:
    mode = gate.config.mode
    lines = [
        "# HELP ibgw_gate_halted 1 while the kill switch refuses new orders",
        "# TYPE ibgw_gate_halted gauge",
        f'ibgw_gate_halted{{mode="{mode}"}} {int(gate.halted)}',
        "# HELP ibgw_gate_connections_refused_total Connections refused at START_API",
        "# TYPE ibgw_gate_connections_refused_total counter",
        f'ibgw_gate_connections_refused_total{{mode="{mode}"}} {gate.refused_connections}',
        "# HELP ibgw_gate_interlock_tripped 1 once the gateway reported accounts of the other mode",
        "# TYPE ibgw_gate_interlock_tripped gauge",
        f'ibgw_gate_interlock_tripped{{mode="{mode}"}} {int(gate.interlock is not None)}',
    ]
    for name, kind, help_text, field in _APP_METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for app in gate.config.apps:
            value = getattr(gate.stats[app.name], field)
            if value is not None:
                labels = f'mode="{mode}",app="{app.name}",client_id="{app.client_id}"'
                lines.append(
                    f"{name}{{{labels}}} {value:.3f}"
                    if field == "last_seen"
                    else f"{name}{{{labels}}} {int(value)}"
                )
    return "\n".join(lines) + "\n"


def _response(status: str, body: str, content_type: str = "text/plain; charset=utf-8") -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + data


async def _handle(gate: GateState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        async with aio_timeout(REQUEST_TIMEOUT):
            request = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = request.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method != b"GET":
            writer.write(_response("405 Method Not Allowed", "GET only\n"))
        elif path == b"/metrics":
            writer.write(_response("200 OK", render(gate), "text/plain; version=0.0.4; charset=utf-8"))
        else:
            writer.write(_response("404 Not Found", "see /metrics\n"))
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(gate: GateState, host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(lambda r, w: _handle(gate, r, w), host, port, limit=MAX_REQUEST)
