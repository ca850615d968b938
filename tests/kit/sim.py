"""Test helpers: run the simulator on a background loop; decode its bytes with the clients' decoders."""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import re
import subprocess
import threading
import time
from datetime import UTC
from decimal import Decimal

from ib_async.decoder import Decoder as IbAsyncDecoder
from ibapi import comm
from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.decoder import Decoder
from ibapi.order import Order
from ibapi.protobuf.ErrorMessage_pb2 import ErrorMessage
from ibapi.protobuf.ManagedAccounts_pb2 import ManagedAccounts
from ibapi.protobuf.NextValidId_pb2 import NextValidId
from ibapi.wrapper import EWrapper

from ibgw_provision.sim.config import SimConfig
from ibgw_provision.sim.server import SimServer
from ibgw_provision.tws import Hello, Out, decode, encode_text, parse_server_hello, read_frame, unframe

STEP = 5.0  # seconds any single wait in a test may take


async def until(predicate, timeout: float = STEP, message: str = "condition not met"):
    """Poll `predicate` every 10 ms until it holds, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(message)
        await asyncio.sleep(0.01)


class ErrorLog(logging.Handler):
    """Collects a logger's error records while attached: each one is a bug a test should see."""

    def __init__(self, logger: str):
        super().__init__(logging.ERROR)
        self.seen: list[str] = []
        self.logger = logging.getLogger(logger)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.format(record))

    def close(self) -> None:
        self.logger.removeHandler(self)
        super().close()


class LoopThread:
    """An asyncio server on its own event loop thread, driven from synchronous test code.

    `close` fails the test if the server logged an error or left an exception unhandled.
    """

    def __init__(self, logger: str):
        self.errors = ErrorLog(logger)
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, context: self.errors.seen.append(repr(context)))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = STEP):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, shutdown, what: str) -> None:
        """Run the `shutdown` coroutine, then stop the loop; once only."""
        if self.loop.is_closed():
            shutdown.close()
            return
        try:
            self.call(shutdown, timeout=3 * STEP)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(STEP)
            self.loop.close()
            self.errors.close()
        assert not self.errors.seen, f"{what} errors: {self.errors.seen}"


class RunningSim(LoopThread):
    """A SimServer on its own event loop thread."""

    def __init__(self, **config):
        config.setdefault("tick_interval", 0.02)
        super().__init__("ibgw.sim")
        self.server = SimServer(SimConfig(**config))
        self.call(self.server.start())

    @property
    def port(self) -> int:
        return self.server.port

    async def _shutdown(self) -> None:
        """Stop the server; then, as asyncio.run does, cancel whatever task it left running."""
        await self.server.stop()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self.close(self._shutdown(), "simulator")


class Recorder(EWrapper):
    """An ibapi wrapper that records every callback (except the raw *ProtoBuf ones)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []


def _recording(name):
    def record(self, *args):
        if not name.endswith("ProtoBuf"):
            self.calls.append((name, args))

    return record


for _name, _ in inspect.getmembers(EWrapper, inspect.isfunction):
    if not _name.startswith("_"):
        setattr(Recorder, _name, _recording(_name))


def ibapi_decode(version: int, data: bytes) -> list[tuple[str, tuple]]:
    """Feed framed server bytes to ibapi's Decoder as EClient.run does; text must be fully consumed."""
    recorder = Recorder()
    decoder = Decoder(recorder, version)
    frames, rest = unframe(data)
    assert rest == b"", "trailing partial frame"
    for payload in frames:
        if version >= 201:
            msg_id, body = int.from_bytes(payload[:4], "big"), payload[4:]
        else:
            head, _, body = payload.partition(b"\0")
            msg_id = int(head)
        if msg_id > 200:
            decoder.processProtoBuf(body, msg_id - 200)
            continue
        fields = comm.read_fields(body)
        info = decoder.msgId2handleInfo[msg_id]
        if info.processMeth is None:
            before = len(recorder.calls)
            decoder.interpretWithSignature(fields, info)
            assert len(recorder.calls) == before + 1, f"message {msg_id}: field count mismatch {fields}"
            continue
        remaining = iter(fields)
        info.processMeth(decoder, remaining)
        leftover = list(remaining)
        assert not leftover, f"message {msg_id} at v{version}: {len(leftover)} unread fields {leftover[:5]}"
    return recorder.calls


class _RaisingLogger:
    """ib_async's decoder logs decoding exceptions; in tests they must fail loudly."""

    def exception(self, message, *args):
        raise AssertionError(message)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class IbAsyncRecorder:
    """Stands in for ib_async's Wrapper: records calls by name."""

    defaultTimezone = UTC

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))


def ib_async_decode(version: int, data: bytes) -> list[tuple[str, tuple]]:
    """Feed framed server bytes to ib_async's Decoder; any decoding exception fails the test."""
    recorder = IbAsyncRecorder()
    decoder = IbAsyncDecoder(recorder, version)
    decoder.logger = _RaisingLogger()
    frames, _ = unframe(data)
    for payload in frames:
        fields = payload.decode(errors="backslashreplace").split("\0")
        fields.pop()
        handler = decoder.handlers[int(fields[0])]
        handler(fields)
    return recorder.calls


class Capture:
    """Takes the place of a client library's socket: keeps the frames it would send."""

    def __init__(self):
        self.frames: list[bytes] = []

    def sendMsg(self, data: bytes) -> None:
        self.frames.append(data)

    def isConnected(self) -> bool:
        return True


def ibapi_client(version: int, client_id: int = 7):
    """An ibapi EClient that encodes requests for `version` into a Capture instead of a socket."""
    client = EClient(EWrapper())
    client.conn, client.serverVersion_, client.clientId = Capture(), version, client_id
    client.setConnState(EClient.CONNECTED)
    return client


def ibapi_request(version: int, call) -> bytes:
    """The frame ibapi sends for `call(client)` at `version`."""
    client = ibapi_client(version)
    call(client)
    return client.conn.frames[-1]


def contract(symbol="SPY", sec_type="STK", **fields):
    """An ibapi Contract on SMART in USD."""
    contract = Contract()
    contract.symbol, contract.secType, contract.exchange, contract.currency = symbol, sec_type, "SMART", "USD"
    for name, value in fields.items():
        setattr(contract, name, value)
    return contract


def order(action, quantity, order_type, **fields):
    """An ibapi Order."""
    order = Order()
    order.action, order.totalQuantity, order.orderType = action, Decimal(quantity), order_type
    for name, value in fields.items():
        setattr(order, name, value)
    return order


class RawClient:
    """A bare TWS API client on the ibgw_provision.tws layer, offering text versions only (<= 200)."""

    def __init__(self, reader, writer, version: int):
        self.reader, self.writer, self.version = reader, writer, version
        self.accounts: list[str] = []
        self.next_valid_id = 0

    @classmethod
    async def connect(cls, port: int, client_id: int, max_version: int = 200, sock=None) -> RawClient:
        """Log on as `client_id` (over `sock` if given), within STEP seconds."""
        async with asyncio.timeout(STEP):
            reader, writer = await (
                asyncio.open_connection(sock=sock) if sock else asyncio.open_connection("127.0.0.1", port)
            )
            writer.write(Hello(100, max_version).encode())
            version, _ = parse_server_hello(await read_frame(reader))
            client = cls(reader, writer, version)
            writer.write(encode_text(version, Out.START_API, (2, client_id, "")))
            while not (client.accounts and client.next_valid_id):
                message = await client.next_message()
                if message.msg_id == 15:
                    client.accounts = (
                        ManagedAccounts.FromString(message.body).accountsList
                        if message.protobuf
                        else message.fields()[1]
                    ).split(",")
                elif message.msg_id == 9:
                    client.next_valid_id = (
                        NextValidId.FromString(message.body).orderId
                        if message.protobuf
                        else int(message.fields()[1])
                    )
        return client

    def send_ibapi(self, call) -> None:
        """Send the request ibapi encodes for `call(client)` at this connection's version."""
        self.writer.write(ibapi_request(self.version, call))

    async def read_until_closed(self, limit: int = 10_000) -> list[int]:
        """Ids of the messages still arriving before the server closes the connection."""
        seen = []
        for _ in range(limit):
            try:
                seen.append((await self.next())[0])
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return seen
        raise AssertionError(f"still open after {limit} messages")

    def send(self, msg_id: int, *fields) -> None:
        self.writer.write(encode_text(self.version, msg_id, fields))

    async def next_message(self):
        """The next message; asyncio.IncompleteReadError once the server closes."""
        return decode(self.version, await asyncio.wait_for(read_frame(self.reader), STEP))

    async def next(self) -> tuple[int, list[str]]:
        """The next message as (id, text fields)."""
        message = await self.next_message()
        return message.msg_id, message.fields()

    async def expect(self, msg_id: int, limit: int = 1000) -> list[str]:
        """Fields of the next message with `msg_id`, skipping up to `limit` others."""
        for _ in range(limit):
            got, fields = await self.next()
            if got == msg_id:
                return fields
        raise AssertionError(f"no message {msg_id} within {limit} messages")

    async def error(self, limit: int = 1000) -> tuple[int, int, str]:
        """The next error as (request id, code, text), skipping 21xx notices and other messages (up to
        `limit` in all); text (version >= 194 layout) or protobuf."""
        for _ in range(limit):
            message = await self.next_message()
            if message.msg_id != 4:
                continue
            if message.protobuf:
                pb = ErrorMessage.FromString(message.body)
                error = pb.id, pb.errorCode, pb.errorMsg
            else:
                fields = message.fields()
                error = int(fields[0]), int(fields[1]), fields[2]
            if not 2100 <= error[1] < 2200:
                return error
        raise AssertionError(f"no error within {limit} messages")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class IbapiApp(Recorder):
    """ibapi's EClient with a recording wrapper; its reader loop runs on a thread."""

    def __init__(self):
        super().__init__()
        self.client = EClient(self)
        self.thread: threading.Thread | None = None

    def start(self, port: int, client_id: int) -> IbapiApp:
        self.client.connect("127.0.0.1", port, client_id)
        self.thread = threading.Thread(target=self.client.run, daemon=True)
        self.thread.start()
        self.wait("nextValidId")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.thread.join(STEP)

    def received(self, name: str, predicate=lambda *args: True) -> list[tuple]:
        return [args for got, args in list(self.calls) if got == name and predicate(*args)]

    def wait(self, name: str, predicate=lambda *args: True, count: int = 1) -> list[tuple]:
        """The first `count` callbacks `name` matching `predicate`, waiting up to STEP seconds."""
        deadline = time.monotonic() + STEP
        while len(found := self.received(name, predicate)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} x {name} not received; got {[n for n, _ in self.calls][-20:]}")
            time.sleep(0.01)
        return found[:count]


class LoggedProcess:
    """A server in a subprocess (`ibgw sim`, `ibgw gate`): its stderr lines are read on a thread
    and can be waited for; `port` is the one its "listening on" line names."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1])

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str) -> re.Match:
        deadline = time.monotonic() + STEP
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no log line matching {pattern!r} in {self.log}")
