"""One app connection through the gate.

PROXY header (on the front's socket only), then the handshake, answered by the gate itself
(see `lobby`): nothing reaches the gateway before START_API is read and its client id admitted.
Then the gate dials the gateway, has it agree the same version, and passes START_API on.
Admitted, the connection becomes a relay: the gateway's bytes go to the app as they arrive;
the app's frames go to the gateway as they arrive too, except order requests, which wait for a
decision committed to the audit log.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import sys
import time

from ..tws import codec, replies, requests, responses, versions
from ..tws.errors import FrameTooLarge, HandshakeError, MalformedMessage, ProtocolError
from ..tws.framing import (
    API_PREFIX,
    MAX_HELLO,
    FrameCounter,
    Hello,
    encode_server_hello,
    frame,
    frame_spans,
    negotiate,
    parse_hello,
    read_frame,
)
from ..tws.messages import In, Out
from ..tws.responses import CONTRACT_MESSAGES, ResponseTap
from . import interlock, orders, policy, proxy, tls
from .config import App
from .link import Link
from .lobby import Lobby
from .state import AppStats, GateState

if sys.version_info >= (3, 11):
    from asyncio import timeout as aio_timeout
else:  # Python 3.10 (Ubuntu 22.04's): the same context manager from async-timeout
    from async_timeout import timeout as aio_timeout

log = logging.getLogger("ibgw.gate")
# What the gate reads of the gateway's messages on their way to the app.
TAPPED = CONTRACT_MESSAGES | {In.ORDER_STATUS, In.ERR_MSG, In.MANAGED_ACCTS, In.OPEN_ORDER_END}


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return proxy.unmapped(ipaddress.ip_address(host.split("%")[0]))


INT32 = range(-(2**31), 2**31)  # IB client ids are 32-bit signed integers
GATEWAY_CHANGED = "gateway version changed, reconnect"


class Connection:
    def __init__(self, gate: GateState, client: Link, lobby: Lobby, front: bool = False):
        self.gate, self.config, self.client = gate, gate.config, client
        self.lobby, self.front = lobby, front  # front: the front's unix socket, which sends PROXY headers
        peer = client.transport.get_extra_info("peername")
        self.source = (_address(peer[0]), peer[1]) if not front else (None, 0)
        self.hello: Hello | None = None
        self._waiting = False  # counted in the lobby's bounds
        self._over_bound = False
        self._allowed = False  # some app may connect from the source (its lobby pool)
        self.upstream: Link | None = None
        self.version = 0
        self.client_id: int | None = None
        self.app: App | None = None
        self.stats: AppStats | None = None
        self.audit_id: int | None = None
        self.reason: str | None = None
        self.peer_cert: tls.Peer | None = None  # with front.tls: the app's verified certificate
        self._ended = asyncio.Event()
        self._partial = bytearray()  # an incomplete frame from the app (appended to: linear time)
        self._backlog: bytearray | None = None  # the app's bytes after an order that awaits its decision
        self._deciding: asyncio.Task | None = None
        self._unconfirmed: collections.deque[tuple[int, int]] = collections.deque()  # (row, end mark)
        self._confirming: asyncio.Task | None = None
        self._frames_out: FrameCounter | ResponseTap = FrameCounter()
        self._accounts_checked = asyncio.Event()  # the gateway's accounts for this logon fit the gate's mode
        client.on_lost = lambda: self.end("client closed the connection")

    @property
    def peer(self) -> str:
        host, port = self.source
        if host is None:
            return "front (no PROXY header yet)"
        return f"[{host}]:{port}" if host.version == 6 else f"{host}:{port}"

    @property
    def _serial(self) -> str | None:
        return self.peer_cert.serial if self.peer_cert else None

    @property
    def who(self) -> str:
        return f"app {self.app.name if self.app else '(none)'} client {self.client_id} from {self.peer}"

    def end(self, reason: str) -> None:
        """Finish the connection (the first reason given is the one recorded)."""
        if self.reason is None:
            self.reason = reason
        self._ended.set()

    def stop(self, reason: str) -> None:
        """End from outside (gate shutdown), also interrupting a handshake in progress."""
        self.end(reason)
        if self.stats is None:
            self.client.close()

    async def run(self) -> None:
        try:
            start_api = await self._handshake_in_time()
            if start_api is not None and await self._admit(start_api):
                await self._relay()
        except Exception:  # one connection's failure must not take the gate down
            log.exception("connection from %s failed", self.peer)
            self.end("internal error (see the gate's log)")
        finally:
            self._leave_lobby()
            await self._close()

    # ---- handshake and admission -----------------------------------------------------------

    async def _handshake_in_time(self) -> bytes | None:
        """The START_API payload, or None (logged) when the handshake fails."""
        try:
            async with aio_timeout(self.config.handshake_timeout):
                return await self._handshake()
        except TimeoutError:
            failure = f"handshake not complete within {self.config.handshake_timeout:g}s"
        except asyncio.IncompleteReadError as exc:
            if not exc.partial and self.hello is None:
                log.debug("%s closed without a handshake", self.peer)
                return None
            failure = "connection closed during the handshake"
        except ProtocolError as exc:
            failure = str(exc)
        if not self._over_bound:  # that is counted and logged by the lobby
            log.warning("connection from %s dropped: %s", self.peer, failure)
        return None

    async def _handshake(self) -> bytes:
        """Answer the app's hello as the gateway would; the START_API payload (small: lobby.max_frame)."""
        if self.front:
            self.source = await proxy.read_source(self.client) or (None, 0)
        if not self._enter_lobby():
            raise HandshakeError("over the bound on unadmitted connections")
        if self.gate.tls is not None:  # front.tls: within the lobby's bounds, before any TWS API byte
            await self._secure(self.gate.tls)
        if await self.client.readexactly(len(API_PREFIX)) != API_PREFIX:
            raise HandshakeError("no API prefix")
        self.hello = parse_hello(await read_frame(self.client, MAX_HELLO))
        self.version = negotiate(self.hello, versions.MIN_CLIENT, await self.lobby.gateway.version())
        self.client.write(encode_server_hello(self.version, self.lobby.gateway.connection_time()))
        return await read_frame(self.client, self.lobby.max_frame)

    async def _secure(self, context: tls.Policy) -> None:
        """front.tls (gate/tls.py): the TLS handshake with the app's certificate, before any TWS API byte."""
        try:
            self.client, self.peer_cert = await tls.accept(self.client, context)
        except tls.Refused as exc:
            self.gate.refused_connections += 1
            await self.gate.audit.connection(None, -1, self.peer, 0, "refused", str(exc))
            raise

    def _enter_lobby(self) -> bool:
        self._allowed = self.lobby.allowed(self.source[0])
        self._waiting = self.lobby.bounds.enter(self.source[0], self._allowed)
        if not self._waiting:
            self._over_bound = True
            self.client.close(abort=True)
        return self._waiting

    def _leave_lobby(self) -> None:
        if self._waiting:
            self._waiting = False
            self.lobby.bounds.leave(self.source[0], self._allowed)

    async def _admit(self, start_api: bytes) -> bool:
        try:
            message = codec.decode(self.version, start_api)
            if message.msg_id != Out.START_API:
                raise MalformedMessage(f"expected START_API, got message {message.msg_id}")
            self.client_id = client_id = orders.client_id(self.version, message)
        except MalformedMessage as exc:
            log.warning("connection from %s dropped: %s", self.peer, exc)
            return False
        if client_id not in INT32:
            await self._refuse(
                client_id, policy.CONNECT_FAILED, f"client id {client_id} is not a 32-bit integer"
            )
            return False
        self.app = app = self.config.apps_by_client_id.get(client_id)
        refusal: tuple[int, str] | None
        if self.source[0] is None:  # a LOCAL or UNKNOWN PROXY header: no app's address
            refusal = policy.CONNECT_FAILED, "the front named no source address"
        else:
            refusal = policy.connection_refusal(
                self.config, client_id, self.source[0], self.gate.connected.keys()
            )
        if refusal is None and app is not None:
            mismatch = tls.certificate_refusal(app.name, client_id, self.peer_cert)
            refusal = None if mismatch is None else (policy.CONNECT_FAILED, mismatch)
        if refusal is None and self.gate.interlock is not None:  # the gateway is of the other mode
            refusal = policy.CONNECT_FAILED, f"paper/live interlock tripped: {self.gate.interlock}"
        if refusal is not None:
            await self._refuse(client_id, *refusal)
            return False
        assert app is not None  # connection_refusal refuses an unregistered client id
        self.gate.connected[client_id] = self  # held while the gateway is dialled: a duplicate gets 326
        failure = await self._dial()
        if failure is not None:
            del self.gate.connected[client_id]
            await self._refuse(client_id, policy.CONNECT_FAILED, failure)
            return False
        return await self._accepted(app, client_id, start_api)

    async def _dial(self) -> str | None:
        """Connect to the gateway at exactly this connection's version; why not, or None.

        The gate offers the gateway versions up to the one it agreed with the app: a gateway that
        answers less has changed since the gate learned its version."""
        assert self.hello is not None
        try:
            link, version, _ = await self.lobby.gateway.dial(
                Hello(versions.MIN_CLIENT, self.version, self.hello.options)
            )
        except HandshakeError as exc:
            return str(exc)
        if version != self.version:
            link.close(abort=True)
            self.lobby.gateway.learn(min(version, self.version))
            log.warning("gateway answered version %d to a hello for %d", version, self.version)
            return f"{GATEWAY_CHANGED} (it answered version {version}, not {self.version})"
        self.upstream = link
        link.on_lost = lambda: self.end("gateway closed the connection")
        link.on_pause = lambda: self.client.hold("gateway")
        link.on_resume = lambda: self.client.release("gateway")
        if link.lost:
            self.end("gateway closed the connection")
        return None

    async def _accepted(self, app: App, client_id: int, start_api: bytes) -> bool:
        self._leave_lobby()
        self.stats = stats = self.gate.stats[app.name]
        stats.connect(self.peer)
        self.audit_id = await self.gate.audit.connection(
            app.name, client_id, self.peer, self.version, "accepted", cert_serial=self._serial
        )
        assert self.upstream is not None  # _dial connected it
        self.upstream.write(frame(start_api))
        stats.messages_in += 1
        log.info("%s connected, server version %d", self.who, self.version)
        return True

    async def _refuse(self, client_id: int, code: int, reason: str) -> None:
        self.client.write(replies.error(self.version, -1, code, policy.REFUSED + reason))
        self.gate.refused_connections += 1
        log.warning(
            "refused client %d from %s (server version %d): %s", client_id, self.peer, self.version, reason
        )
        await self.gate.audit.connection(
            self.app.name if self.app else None,
            client_id if client_id in INT32 else -1,
            self.peer,
            self.version,
            "refused",
            reason,
            cert_serial=self._serial,
        )

    # ---- relay -----------------------------------------------------------------------------

    async def _relay(self) -> None:
        assert self.upstream is not None
        if self.gate.interlock is not None:
            self._refuse_interlock()
            return
        self._frames_out = ResponseTap(self.version, TAPPED, self._from_gateway_message)
        self._count_open_orders()
        self.upstream.relay(self._from_gateway)
        self.client.relay(self._from_client)
        await self._ended.wait()

    def _from_gateway(self, data: bytes) -> None:
        assert self.stats is not None  # relaying starts after admission
        self.client.write(data)
        self.stats.messages_out += self._frames_out.feed(data)
        if self.client.queued > self.config.client_buffer:
            self.end(f"slow client: more than {self.config.client_buffer} bytes queued")
            self.client.close(abort=True)

    def _from_client(self, data: bytes) -> None:
        """The app's bytes: whole frames go on at once, up to an order request, which waits.

        A chunk that holds only whole frames is forwarded uncopied. An unfinished frame is kept in
        a bytearray that later chunks are appended to, so a frame dribbled in small pieces costs
        linear time."""
        if self._ended.is_set():  # nothing more goes through once the connection is ending
            return
        if self._backlog is not None:  # an order awaits its decision; what follows it waits too
            self._backlog += data
            return
        if self._partial:
            self._partial += data
            buffer: bytes | bytearray = self._partial
        else:
            buffer = data
        pos, order_end = self._scan(buffer)
        if pos < 0:
            return
        assert self.stats is not None
        if buffer is self._partial:  # forward a copy: the bytearray changes size below
            self._forward(bytes(memoryview(buffer)[:pos]), pos)
        else:
            self._forward(buffer, pos)
        if order_end is None:
            self._keep(buffer, pos)
        else:
            self._hold_order(bytes(buffer[pos:]), 0, order_end - pos)
        self.stats.last_seen = time.time()

    def _keep(self, buffer: bytes | bytearray, pos: int) -> None:
        """Keep buffer[pos:], the start of a frame still to come."""
        if buffer is self._partial:
            del self._partial[:pos]
        else:
            self._partial = bytearray(memoryview(buffer)[pos:])

    def _scan(self, buffer: bytes | bytearray) -> tuple[int, int | None]:
        """(end of the frames that pass, end of the order request after them or None);
        (-1, None) after ending the connection on a frame that must not pass."""
        pos, stats = 0, self.stats
        assert stats is not None
        try:
            for start, end in frame_spans(buffer, 0, self.config.max_frame):
                if end > len(buffer):
                    break
                msg_id = self._message_id(buffer, start + 4, end - start - 4)
                if msg_id is None:
                    return -1, None
                stats.messages_in += 1
                if msg_id in orders.ORDER_REQUESTS or self._refuses(msg_id):
                    return start, end
                pos = end
        except FrameTooLarge as exc:
            self._stop_on(f"refused a frame of {exc.size} bytes (max_frame {self.config.max_frame})")
            return -1, None
        return pos, None

    def _message_id(self, buffer: bytes | bytearray, start: int, size: int) -> int | None:
        """The id of the message at `start`, or None after ending the connection on one that must not pass."""
        try:
            msg_id, _, _ = codec.message_id(
                self.version, bytes(buffer[start : start + min(size, codec.ID_BYTES)])
            )
        except MalformedMessage as exc:
            self._stop_on(f"unreadable message: {exc}")
            return None
        if msg_id == Out.START_API:
            self._stop_on("START_API sent twice")
            return None
        return msg_id

    def _stop_on(self, reason: str) -> None:
        log.warning("%s: %s; disconnecting", self.who, reason)
        self.end(reason)

    def _forward(self, buffer: bytes | bytearray, end: int) -> None:
        """Send the first `end` bytes of `buffer` to the gateway, uncopied when that is all of it."""
        if end:
            assert self.upstream is not None
            self.upstream.write(buffer if end == len(buffer) else memoryview(buffer)[:end])

    def _hold_order(self, buffer: bytes, start: int, end: int) -> None:
        """Stop reading from the app while the order request in buffer[start:end] is decided."""
        self._backlog = bytearray(buffer[end:])
        self._partial = bytearray()
        self.client.hold("order")
        message = codec.decode(self.version, buffer[start + 4 : end])
        self._deciding = asyncio.create_task(self._decide(message, buffer[start:end]))

    async def _decide(self, message: codec.Message, original: bytes) -> None:
        """Audit a held request durably, then forward it or answer the refusal; then carry on."""
        app, upstream, client_id, audit_id = self.app, self.upstream, self.client_id, self.audit_id
        assert app is not None and upstream is not None and client_id is not None and audit_id is not None
        order, reason = await self._judge(app, client_id, message)
        try:
            row = await self.gate.record_order(audit_id, app.name, client_id, order, reason)
        except Exception:  # no audit, no order: fail closed
            log.exception("%s: cannot write the audit log; disconnecting", self.who)
            self.end("audit log write failed")
            return
        if reason is None:
            self._count(app, order)
            upstream.write(original)
            self._confirm(row, upstream.sent)
        else:
            log.warning(
                "%s: refused %s%s: %s",
                self.who,
                order.request,
                "" if order.order_id is None else f" (order {order.order_id})",
                reason,
            )
            self.client.write(
                replies.error(self.version, order.reply_id, policy.REQUEST_REFUSED, policy.REFUSED + reason)
            )
        backlog, self._backlog = self._backlog or bytearray(), None
        self._from_client(bytes(backlog))
        if self._backlog is None:
            self.client.release("order")

    def _confirm(self, row: int, mark: int) -> None:
        """Record order `row` forwarded once the gateway's TCP has acknowledged its bytes (up to `mark`)."""
        self._unconfirmed.append((row, mark))
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.create_task(self._confirm_loop())

    def _delivered(self) -> list[int]:
        """Take the rows of the orders whose bytes the gateway has acknowledged, oldest first."""
        upstream, rows = self.upstream, []
        assert upstream is not None
        while self._unconfirmed and upstream.delivered(self._unconfirmed[0][1]):
            rows.append(self._unconfirmed.popleft()[0])
        return rows

    async def _confirm_loop(self) -> None:
        delay = 0.0005
        while self._unconfirmed and not self._ended.is_set():
            rows = self._delivered()
            for row in rows:
                await self._record_forwarded(row)
            delay = 0.0005 if rows else min(2 * delay, 0.05)
            await asyncio.sleep(delay)

    async def _record_forwarded(self, row: int) -> None:
        try:
            await self.gate.audit.order_forwarded(row)
        except Exception:
            log.exception("%s: cannot record order row %d as forwarded", self.who, row)

    # ---- the request policy (orders, settings, limits) and what the gateway's replies teach it -----

    def _refuses(self, msg_id: int) -> bool:
        """Does the policy refuse this non-order request id now? A refusal waits for its audit row."""
        assert self.app is not None and self.client_id is not None
        return policy.request_refusal(self.app, self.gate.halted, msg_id, self.client_id) is not None

    async def _judge(
        self, app: App, client_id: int, message: codec.Message
    ) -> tuple[orders.OrderRequest, str | None]:
        """The audit view of a held request and why it is refused (None: forward it)."""
        if message.msg_id not in orders.ORDER_REQUESTS:
            request = orders.refused_request(message.msg_id)
            return request, policy.request_refusal(app, self.gate.halted, message.msg_id, client_id)
        try:
            order = orders.read_order(self.version, message)
        except MalformedMessage as exc:
            order = orders.OrderRequest(orders.ORDER_REQUESTS[message.msg_id])
            return order, f"unreadable {order.request}: {exc}"
        if not await self._accounts_fit():
            why = self.gate.interlock or "no managedAccounts in time"
            return order, f"the gateway's accounts are not checked: {why}"
        if order.request == "placeOrder" and not await self._open_orders_listed(app):
            return order, "the gateway has not listed the app's open orders (max_open_orders): try again"
        risk = self.gate.app_risk(app.name)
        context = policy.Context(client_id, self.gate.halted, self.gate.contracts, risk)
        return order, policy.order_refusal(app, order, context)

    async def _accounts_fit(self) -> bool:
        """Wait (bounded) until this logon's accounts are known to fit the gate's mode."""
        try:
            async with aio_timeout(self.config.handshake_timeout):
                await self._accounts_checked.wait()
        except TimeoutError:
            return False
        return self.gate.interlock is None

    def _count_open_orders(self) -> None:
        """For an app with max_open_orders: ask the gateway for its open orders at each logon, as orders
        may have ended while it was away (the replies reach the app too, as after its own request)."""
        assert self.app is not None and self.upstream is not None
        if self.app.max_open_orders is not None and self.client_id != 0:  # client 0's would bind TWS orders
            self.gate.app_risk(self.app.name).rebuild()
            self.upstream.write(requests.encode_req_open_orders(self.version))

    async def _open_orders_listed(self, app: App) -> bool:
        """Wait (bounded) for the gateway's list of this app's open orders, when one was asked for."""
        rebuilt = self.gate.app_risk(app.name).rebuilt
        if app.max_open_orders is None or rebuilt is None:
            return True
        try:
            async with aio_timeout(self.config.handshake_timeout):
                await rebuilt.wait()
        except TimeoutError:
            return False
        return True

    def _count(self, app: App, order: orders.OrderRequest) -> None:
        """Count a forwarded order toward the app's rate and open-order limits."""
        if order.request in orders.NEW_ORDERS:
            risk = self.gate.app_risk(app.name)
            new = order.request == "placeOrder" and not order.what_if and order.order_id not in risk.open
            tracked = app.max_open_orders is not None
            risk.forwarded(order.order_id, new and tracked, app.max_orders_per_minute)

    def _from_gateway_message(self, message: codec.Message) -> None:
        """Learn from a gateway message the tap picked out: contracts, order states, the logon's accounts."""
        try:
            self._learn(message)
        except MalformedMessage as exc:
            log.warning("%s: unreadable message %d from the gateway: %s", self.who, message.msg_id, exc)
            if message.msg_id == In.MANAGED_ACCTS:
                self._interlock(f"unreadable managedAccounts: {exc}")

    def _learn(self, message: codec.Message) -> None:
        msg_id, version, app = message.msg_id, self.version, self.app
        assert app is not None
        if msg_id in CONTRACT_MESSAGES:
            self.gate.contracts.learn(responses.read_contract(version, message))
        if app.max_open_orders is None:
            pass
        elif msg_id == In.ORDER_STATUS:
            state = responses.read_order_status(version, message)
            self.gate.app_risk(app.name).status(state.order_id, state.status)
        elif msg_id == In.ERR_MSG:
            error = responses.read_error(version, message)
            self.gate.app_risk(app.name).error(error.req_id, error.code)
        elif msg_id == In.OPEN_ORDER_END:
            self.gate.app_risk(app.name).listed()
        if msg_id == In.MANAGED_ACCTS:
            reason = interlock.mismatch(self.config.mode, responses.read_managed_accounts(version, message))
            if reason is not None:
                self._interlock(reason)
            self._accounts_checked.set()

    def _interlock(self, reason: str) -> None:
        interlock.trip(self.gate, reason)
        self._accounts_checked.set()
        self.end(f"paper/live interlock: {reason}")
        self.client.close()

    def _refuse_interlock(self) -> None:
        reason = f"paper/live interlock tripped: {self.gate.interlock}"
        self.client.write(replies.error(self.version, -1, policy.CONNECT_FAILED, policy.REFUSED + reason))
        log.warning("%s refused: %s", self.who, reason)
        self.end(reason)

    # ---- closing ---------------------------------------------------------------------------

    async def _close(self) -> None:
        if self._deciding is not None:
            await asyncio.wait({self._deciding})  # a committed order still reaches the gateway
        if self._confirming is not None:
            # It stops by itself once the connection has ended. Cancelling it could drop a
            # 'forwarded' write still queued for the audit thread, so it is only cut short if stuck.
            self.end("closed")
            await asyncio.wait({self._confirming}, timeout=1.0)
            self._confirming.cancel()
        confirmed = self._delivered() if self.upstream is not None else []  # the rest stay 'forwarding'
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        if self.stats is not None and self.app is not None:
            self.gate.disconnected(self.client_id, self.app.name, self)
        for row in confirmed:
            await self._record_forwarded(row)
        if self.stats is None or self.app is None:
            return
        reason = self.reason or "closed"
        log.info("%s disconnected: %s", self.who, reason)
        if self.audit_id is not None:
            try:
                await self.gate.audit.connection_ended(self.audit_id, reason)
            except Exception:
                log.exception("%s: cannot record the end of the connection", self.who)
