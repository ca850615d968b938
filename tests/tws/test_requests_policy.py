"""The request table against the official client: every request it can send is classified,
and the requests an attacker used to change the gateway from a read-only app are not reads."""

from __future__ import annotations

import inspect
import re

import pytest
from ib_async import client as ib_async_client
from ib_async.client import Client as IBAsyncClient
from ibapi import client as ibapi_client
from ibapi.client import EClient
from ibapi.common import getServerVersionForMessage
from ibapi.message import OUT
from ibapi.protobuf.UpdateConfigRequest_pb2 import UpdateConfigRequest
from ibapi.server_versions import MAX_CLIENT_VER, MIN_SERVER_VER_PROTOBUF
from ibapi.wrapper import EWrapper

from ibgw_provision.tws import Message, decode, requests_policy
from ibgw_provision.tws.requests_policy import ORDER, READ, REQUESTS, SESSION, SETTINGS, Kind

TEXT_VERSION = MIN_SERVER_VER_PROTOBUF - 1  # the newest version where every request is text


def test_every_ibapi_request_id_is_classified_under_its_ibapi_name():
    assert {m.value: m.name for m in OUT} == {
        msg_id: constant
        for msg_id, (constant, _, _) in REQUESTS.items()
        if msg_id not in requests_policy.LEGACY
    }
    assert requests_policy.LEGACY <= REQUESTS.keys()
    assert all(isinstance(entry[2], Kind) for entry in REQUESTS.values())


def test_names_are_the_official_clients_methods():
    for msg_id, (constant, method, _) in REQUESTS.items():
        client = IBAsyncClient if msg_id in requests_policy.LEGACY else EClient
        assert hasattr(client, method) or hasattr(client, method + "ProtoBuf"), (constant, method)


def test_every_id_ib_async_sends_is_classified():
    """ib_async writes each request's id as the first literal of its send call."""
    source = inspect.getsource(ib_async_client)
    sent = {int(i) for i in re.findall(r"self\.send\(\s*(\d+)", source)}
    assert len(sent) > 70
    assert sent <= REQUESTS.keys(), sorted(sent - REQUESTS.keys())
    assert requests_policy.LEGACY <= sent  # still needed


def test_every_id_the_client_sends_is_classified():
    """Ids are read off each send call in ibapi's client.py, text and protobuf alike."""
    source = inspect.getsource(ibapi_client)
    sent = re.findall(r"self\.sendMsg(?:ProtoBuf)?\(\s*([^,]+),", source)
    assert len(sent) > 150  # about one text and one protobuf send per request
    for expression in sent:
        match = re.fullmatch(r"OUT\.(\w+)(\s*\+\s*PROTOBUF_MSG_ID)?", expression.strip())
        assert match, f"a send with an id not taken from OUT: {expression}"
        assert OUT[match[1]].value in REQUESTS


def test_every_id_with_a_protobuf_form_is_classified():
    with_protobuf = {i for i in range(1, 200) if getServerVersionForMessage(i) != float("inf")}
    assert len(with_protobuf) > 60
    assert with_protobuf <= REQUESTS.keys()


def test_the_classes():
    by_kind = {k: {m for m, (_, _, kind) in REQUESTS.items() if kind is k} for k in Kind}
    assert by_kind[ORDER] == {OUT.PLACE_ORDER, OUT.CANCEL_ORDER, OUT.REQ_GLOBAL_CANCEL, OUT.EXERCISE_OPTIONS}
    assert by_kind[SETTINGS] == {
        OUT.SET_SERVER_LOGLEVEL,
        OUT.REQ_AUTO_OPEN_ORDERS,
        OUT.REPLACE_FA,
        OUT.UPDATE_DISPLAY_GROUP,
        OUT.UPDATE_CONFIG,
    }
    assert by_kind[SESSION] == {
        OUT.START_API,
        OUT.VERIFY_REQUEST,
        OUT.VERIFY_MESSAGE,
        OUT.VERIFY_AND_AUTH_REQUEST,
        OUT.VERIFY_AND_AUTH_MESSAGE,
    }
    assert len(by_kind[READ]) == len(OUT) - 14 + len(requests_policy.LEGACY)


class _Wire:
    """Stands in for ibapi's connection: keeps the frames the client sends."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def isConnected(self) -> bool:
        return True

    def sendMsg(self, msg: bytes) -> None:
        self.frames.append(msg)


def _sent(version: int, call) -> Message:
    """The one message `call` makes ibapi send, as the gate decodes it."""
    client = EClient(EWrapper())
    client.conn, client.connState, client.serverVersion_, client.extraAuth = (
        _Wire(),
        EClient.CONNECTED,
        version,
        True,
    )
    call(client)
    (frame,) = client.conn.frames
    return decode(version, frame[4:])


ATTACKS = {
    "updateConfig": lambda c: c.updateConfigProtoBuf(UpdateConfigRequest(reqId=1)),
    "replaceFA": lambda c: c.replaceFA(1, 1, "<ListOfGroups/>"),
    "setServerLogLevel": lambda c: c.setServerLogLevel(5),
    "reqAutoOpenOrders": lambda c: c.reqAutoOpenOrders(True),
    "updateDisplayGroup": lambda c: c.updateDisplayGroup(1, "8314@SMART"),
    "verifyRequest": lambda c: c.verifyRequest("app", "1"),
    "verifyMessage": lambda c: c.verifyMessage("data"),
    "verifyAndAuthRequest": lambda c: c.verifyAndAuthRequest("app", "1", "key"),
    "verifyAndAuthMessage": lambda c: c.verifyAndAuthMessage("data", "response"),
}


@pytest.mark.parametrize(
    ("request_name", "version"),
    [
        (request, version)
        for request in ATTACKS
        for version in (TEXT_VERSION, MAX_CLIENT_VER)
        if (request, version) != ("updateConfig", TEXT_VERSION)  # updateConfig exists only as protobuf
    ],
)
def test_what_the_attack_run_sent_is_not_a_read(request_name, version):
    message = _sent(version, ATTACKS[request_name])
    # ibapi has no protobuf form of verifyAndAuth*; every other one is protobuf at the top version.
    assert message.protobuf == (version == MAX_CLIENT_VER and not request_name.startswith("verifyAndAuth"))
    msg_id = message.msg_id
    assert requests_policy.name(msg_id) == request_name
    assert not requests_policy.is_read(msg_id)
    assert "read-only app" in requests_policy.refusal(msg_id, read_only=True, halted=False)
    assert "halted" in requests_policy.refusal(msg_id, read_only=False, halted=True)


@pytest.mark.parametrize("version", [TEXT_VERSION, MAX_CLIENT_VER], ids=["text", "protobuf"])
def test_a_read_passes_in_both_encodings(version):
    message = _sent(version, lambda c: c.reqCurrentTime())
    msg_id = message.msg_id
    assert message.protobuf == (version == MAX_CLIENT_VER)
    assert requests_policy.is_read(msg_id)
    assert requests_policy.refusal(msg_id, read_only=True, halted=True) is None


@pytest.mark.parametrize("msg_id", [0, 26, 60, 110, 200, 250, 2**31])
def test_unknown_ids_are_refused_to_read_only_apps_and_while_halted(msg_id):
    assert requests_policy.kind(msg_id) is None and not requests_policy.is_read(msg_id)
    assert requests_policy.name(msg_id) == f"request {msg_id}"
    assert (
        requests_policy.refusal(msg_id, read_only=True, halted=False)
        == f"request {msg_id} (unknown request) is not allowed for a read-only app"
    )
    assert requests_policy.refusal(msg_id, read_only=False, halted=True) is not None
    assert requests_policy.refusal(msg_id, read_only=False, halted=False) is None


def test_while_halted_orders_and_settings_are_refused_and_reads_pass():
    for msg_id, (_, method, kind) in REQUESTS.items():
        reason = requests_policy.refusal(msg_id, read_only=False, halted=True)
        assert (reason is None) == (kind is READ), method


def test_a_trading_app_is_left_to_the_order_rules():
    assert all(requests_policy.refusal(m, read_only=False, halted=False) is None for m in REQUESTS)


def test_client_zero_binds_manual_orders_with_req_open_orders():
    assert requests_policy.is_read(OUT.REQ_OPEN_ORDERS, client_id=7)
    assert not requests_policy.is_read(OUT.REQ_OPEN_ORDERS, client_id=0)
    assert requests_policy.refusal(OUT.REQ_OPEN_ORDERS, read_only=True, halted=False, client_id=0) is not None
    assert requests_policy.is_read(OUT.REQ_ALL_OPEN_ORDERS, client_id=0)
