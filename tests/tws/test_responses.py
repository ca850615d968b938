"""tws.responses: the gateway messages the gate learns from, read at every version the simulator writes
(its encoder is checked against ibapi's and ib_async's decoders); the tap over any split; fuzzed."""

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ibgw_provision.sim.broker import Order, Position
from ibgw_provision.sim.config import MIN_VERSION
from ibgw_provision.sim.responses import Encoder
from ibgw_provision.sim.universe import ContractQuery, Universe
from ibgw_provision.tws import decode, responses, unframe, versions
from ibgw_provision.tws.errors import MalformedMessage
from ibgw_provision.tws.messages import In
from ibgw_provision.tws.responses import ContractFacts, ResponseTap

UNIVERSE = Universe("20250117")
SPY = UNIVERSE.find(ContractQuery(symbol="SPY", sec_type="STK"))[0]
CALL = UNIVERSE.find(ContractQuery(symbol="SPY", sec_type="OPT", strike=600, right="C"))[0]
VERSIONS = sorted(
    {MIN_VERSION, 163, 164, 178, 182, 194, 200, *versions.PROTOBUF_RESPONSE_SINCE.values(), versions.LATEST}
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
READERS = {
    In.CONTRACT_DATA: responses.read_contract,
    In.BOND_CONTRACT_DATA: responses.read_contract,
    In.OPEN_ORDER: responses.read_contract,
    In.POSITION_DATA: responses.read_contract,
    In.PORTFOLIO_VALUE: responses.read_contract,
    In.ORDER_STATUS: responses.read_order_status,
    In.ERR_MSG: responses.read_error,
    In.MANAGED_ACCTS: responses.read_managed_accounts,
}


def _order() -> Order:
    return Order(3, 11, 1000123, CALL, "BUY", Decimal(2), "LMT", 5.5, "DAY", "DU1234567")


def _messages(version: int, data: bytes):
    frames, rest = unframe(data)
    assert rest == b""
    return [decode(version, payload) for payload in frames]


@pytest.mark.parametrize("version", VERSIONS)
def test_readers_read_what_the_gateway_writes(version):
    e = Encoder(version)
    [stock] = _messages(version, e.contract_data(7, SPY))
    [option] = _messages(version, e.contract_data(7, CALL))
    assert responses.read_contract(version, stock) == ContractFacts(SPY.con_id, "STK", "")
    assert responses.read_contract(version, option) == ContractFacts(CALL.con_id, "OPT", "100")
    [open_order] = _messages(version, e.open_order(_order()))
    assert (
        responses.read_contract(version, open_order).con_id,
        responses.read_open_order_id(version, open_order),
    ) == (
        CALL.con_id,
        11,
    )
    [position] = _messages(version, e.position(Position("DU1234567", CALL, Decimal(-2), 250.0)))
    assert responses.read_contract(version, position).sec_type == "OPT"
    [portfolio] = _messages(version, e.portfolio_value(Position("DU1234567", SPY, Decimal(3), 1.0), 600.0))
    assert responses.read_contract(version, portfolio) == ContractFacts(SPY.con_id, "STK", "")
    [status] = _messages(version, e.order_status(_order()))
    assert responses.read_order_status(version, status) == responses.OrderState(11, "Submitted")
    [error] = _messages(version, e.error(11, 202, "Order Canceled - reason:"))
    assert responses.read_error(version, error) == responses.ErrorReply(11, 202, "Order Canceled - reason:")
    [accounts] = _messages(version, e.managed_accounts(["DU1", "DU2"]))
    assert responses.read_managed_accounts(version, accounts) == ("DU1", "DU2")


def _stream(version: int) -> bytes:
    e = Encoder(version)
    return (
        e.managed_accounts(["DU1234567"])
        + e.current_time(1)
        + e.contract_data(7, CALL)
        + e.contract_data_end(7)
        + e.order_status(_order())
        + e.error(-1, 2104, "farm OK")
    )


@pytest.mark.parametrize("version", [178, versions.LATEST])
@FUZZ
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_the_tap_sees_the_same_messages_however_the_stream_is_split(version, cuts):
    data = _stream(version)
    seen: list = []
    tap = ResponseTap(version, {In.CONTRACT_DATA, In.ORDER_STATUS, In.MANAGED_ACCTS}, seen.append)
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    frames = sum(tap.feed(piece) for piece in pieces)
    assert frames == 6
    assert [m.msg_id for m in seen] == [In.MANAGED_ACCTS, In.CONTRACT_DATA, In.ORDER_STATUS]
    assert responses.read_contract(version, seen[1]).con_id == CALL.con_id


@pytest.mark.parametrize("version", [178, versions.LATEST])
@FUZZ
@given(chunks=st.lists(st.binary(max_size=64), max_size=20))
def test_the_tap_never_crashes_on_garbage(version, chunks):
    seen: list = []
    tap = ResponseTap(version, set(READERS), seen.append)
    for chunk in chunks:
        assert tap.feed(chunk) >= 0
    for message in seen:
        try:
            READERS[message.msg_id](version, message)
        except MalformedMessage:
            pass


@FUZZ
@given(
    version=st.sampled_from([MIN_VERSION, 163, 178, 200, versions.LATEST]),
    msg_id=st.sampled_from(sorted(READERS)),
    as_protobuf=st.booleans(),
    body=st.one_of(
        st.binary(max_size=200),
        st.lists(st.text(max_size=12), max_size=40).map(
            lambda fields: "".join(f.replace("\0", "") + "\0" for f in fields).encode()
        ),
    ),
)
def test_readers_never_crash(version, msg_id, as_protobuf, body):
    """Anything the gateway could send: a result or MalformedMessage, nothing else."""
    message = decode(
        version,
        (msg_id + 200 if as_protobuf else msg_id).to_bytes(4, "big") + body
        if version >= versions.PROTOBUF
        else b"%d\0" % msg_id + body,
    )
    try:
        READERS[message.msg_id](version, message)
    except MalformedMessage:
        pass
