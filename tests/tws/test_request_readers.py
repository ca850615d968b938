"""tws.requests reads START_API and the order requests exactly as ibapi's EClient encodes them, text and
protobuf, at every version from 100 to ibapi's top: every field read, and the whole text layout walked."""

import math
from decimal import Decimal

import pytest
from ibapi.client import EClient
from ibapi.contract import ComboLeg as IbComboLeg
from ibapi.contract import Contract as IbContract
from ibapi.contract import DeltaNeutralContract
from ibapi.order import Order as IbOrder
from ibapi.order_cancel import OrderCancel
from ibapi.order_condition import (
    ExecutionCondition,
    MarginCondition,
    PercentChangeCondition,
    PriceCondition,
    TimeCondition,
    VolumeCondition,
)
from ibapi.tag_value import TagValue
from ibapi.wrapper import EWrapper

from ibgw_provision.tws import decode, versions
from ibgw_provision.tws import requests as R
from ibgw_provision.tws.errors import MalformedMessage
from ibgw_provision.tws.fields import UNSET_DOUBLE
from ibgw_provision.tws.messages import Out

VERSIONS = [
    100,
    versions.CASH_QTY,
    157,
    versions.MANUAL_ORDER_TIME,
    versions.PEGBEST_PEGMID_OFFSETS,
    178,
    versions.MANUAL_ORDER_TIME_EXERCISE_OPTIONS,
    versions.RFQ_FIELDS,
    versions.CME_TAGGING_FIELDS,
    200,
    versions.PROTOBUF,
    versions.PROTOBUF + 1,
    versions.PROTOBUF_PLACE_ORDER,
    versions.PROTOBUF_REST_MESSAGES_1,
    versions.LATEST,
]
SPY = R.Contract(0, "SPY", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "")


class _Capture:
    """Takes the place of ibapi's socket: keeps the frames it would send."""

    def __init__(self):
        self.frames: list[bytes] = []

    def sendMsg(self, data: bytes) -> None:
        self.frames.append(data)

    def isConnected(self) -> bool:
        return True


def ibapi_request(version: int, call) -> bytes:
    """The frame ibapi's EClient sends for `call(client)` at `version` (client id 7)."""
    client = EClient(EWrapper())
    client.conn, client.serverVersion_, client.clientId = _Capture(), version, 7
    client.setConnState(EClient.CONNECTED)
    call(client)
    return client.conn.frames[-1]


def contract(symbol="SPY", sec_type="STK", **fields) -> IbContract:
    built = IbContract()
    built.symbol, built.secType, built.exchange, built.currency = symbol, sec_type, "SMART", "USD"
    for name, value in fields.items():
        setattr(built, name, value)
    return built


def order(action, quantity, order_type, **fields) -> IbOrder:
    built = IbOrder()
    built.action, built.totalQuantity, built.orderType = action, Decimal(quantity), order_type
    for name, value in fields.items():
        setattr(built, name, value)
    return built


def read(version: int, call):
    message = decode(version, ibapi_request(version, call)[4:])
    assert message.protobuf == versions.request_is_protobuf(version, message.msg_id)
    return R.read(version, message)


def _order(version: int, *args, **fields):
    if version < versions.CASH_QTY:
        fields["cashQty"] = 0.0  # below CASH_QTY ibapi refuses any cashQty, even the unset one
    return order(*args, **fields)


def _leg(con_id: int, ratio: int, action: str):
    leg = IbComboLeg()
    leg.conId, leg.ratio, leg.action, leg.exchange = con_id, ratio, action, "SMART"
    return leg


@pytest.mark.parametrize("version", VERSIONS)
def test_start_api(version):
    def start(client):
        client.optCapab = "+PACEAPI"
        client.startApi()

    assert read(version, start) == R.StartApi(7, "+PACEAPI")


@pytest.mark.parametrize("version", VERSIONS)
def test_place_order_every_field(version):
    cash = version >= versions.CASH_QTY
    call = contract(
        "AAPL",
        "OPT",
        conId=265598,
        lastTradeDateOrContractMonth="20300117",
        strike=200.0,
        right="C",
        multiplier="100",
        primaryExchange="CBOE",
        localSymbol="AAPL  300117C00200000",
        tradingClass="AAPL",
        secIdType="ISIN",
        secId="US0378331005",
    )
    placed = read(
        version,
        lambda c: c.placeOrder(
            42,
            call,
            _order(
                version,
                "SELL",
                "2.5",
                "LMT",
                lmtPrice=601.25,
                auxPrice=1.5,
                tif="GTC",
                ocaGroup="g",
                account="DU1",
                orderRef="ref",
                transmit=False,
                parentId=41,
                outsideRth=True,
                whatIf=True,
                clientId=9,
                **({"cashQty": 1000.0} if cash else {}),
            ),
        ),
    )
    quantity = Decimal("2.5") if version >= versions.FRACTIONAL_POSITIONS else Decimal(2)
    contract_read = R.Contract(
        265598,
        "AAPL",
        "OPT",
        "20300117",
        200.0,
        "C",
        "100",
        "SMART",
        "CBOE",
        "USD",
        "AAPL  300117C00200000",
        "AAPL",
        "ISIN",
        "US0378331005",
    )
    protobuf = versions.request_is_protobuf(version, Out.PLACE_ORDER)
    assert placed == R.PlaceOrder(
        42,
        contract_read,
        "SELL",
        quantity,
        "LMT",
        601.25,
        1.5,
        "GTC",
        "g",
        "DU1",
        "ref",
        False,
        41,
        True,
        True,
        1000.0 if cash else None,
        9 if protobuf else None,
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_place_order_unset_prices(version):
    placed = read(version, lambda c: c.placeOrder(43, contract(), _order(version, "BUY", 1, "MKT")))
    assert (placed.lmt_price, placed.aux_price, placed.cash_qty, placed.transmit) == (None, None, None, True)
    assert placed.unread_fields == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_place_order_combo_legs(version):
    bag = contract("SPY", "BAG", comboLegs=[_leg(111, 1, "BUY"), _leg(222, 2, "SELL")])
    placed = read(
        version,
        lambda c: c.placeOrder(
            44,
            bag,
            _order(
                version,
                "BUY",
                3,
                "LMT",
                lmtPrice=1.25,
                smartComboRoutingParams=[TagValue("NonGuaranteed", "1")],
            ),
        ),
    )
    assert placed.contract.combo_legs == (
        R.ComboLeg(111, 1, "BUY", "SMART"),
        R.ComboLeg(222, 2, "SELL", "SMART"),
    )
    assert (placed.total_quantity, placed.lmt_price, placed.unread_fields) == (3, 1.25, 0)


def _conditions():
    price = PriceCondition(PriceCondition.TriggerMethodEnum.Default, 265598, "SMART", True, 200.0)
    volume = VolumeCondition(265598, "SMART", False, 1000)
    change = PercentChangeCondition(265598, "SMART", True, 5.0)
    execution = ExecutionCondition("STK", "SMART", "AAPL")
    return [
        price,
        TimeCondition(True, "20300101 10:00:00 US/Eastern").Or(),
        MarginCondition(False, 30),
        execution,
        volume,
        change,
    ]


def _busy(version: int, order_type: str, **fields):
    """An order with every optional text block present: legs aside, the hardest layout to walk."""
    busy = _order(
        version,
        "BUY",
        5,
        order_type,
        lmtPrice=10.0,
        deltaNeutralOrderType="LMT",
        deltaNeutralConId=9,
        scalePriceIncrement=0.5,
        hedgeType="D",
        hedgeParam="0.5",
        algoStrategy="Adaptive",
        algoParams=[TagValue("adaptivePriority", "Normal")],
        **fields,
    )
    if version >= versions.PEGGED_TO_BENCHMARK:
        busy.conditions = _conditions()
    return busy


@pytest.mark.parametrize("version", [v for v in VERSIONS if v < versions.PROTOBUF_PLACE_ORDER])
@pytest.mark.parametrize(
    "order_type, fields",
    [
        ("LMT", {}),
        ("PEG BENCH", {"referenceContractId": 1, "peggedChangeAmount": 0.1, "referenceChangeAmount": 0.2}),
        ("PEG MID", {"midOffsetAtWhole": 0.01, "midOffsetAtHalf": 0.005}),
        ("PEG BEST", {"minCompeteSize": 100, "competeAgainstBestOffset": math.inf, "midOffsetAtWhole": 0.01}),
        ("PEG BEST", {"minCompeteSize": 100, "competeAgainstBestOffset": 0.02}),
    ],
)
def test_text_place_order_walks_every_optional_block(version, order_type, fields):
    ats = contract("AAPL", exchange="IBKRATS", deltaNeutralContract=DeltaNeutralContract())
    cash = {"cashQty": 250.0} if version >= versions.CASH_QTY else {}
    if version >= versions.PEGBEST_PEGMID_OFFSETS:
        fields = {**fields, "minTradeQty": 10}
    elif order_type in ("PEG BEST", "PEG MID"):
        fields = {}  # ibapi refuses these parameters below PEGBEST_PEGMID_OFFSETS
    placed = read(version, lambda c: c.placeOrder(45, ats, _busy(version, order_type, **fields, **cash)))
    assert placed.unread_fields == 0
    assert (placed.order_type, placed.total_quantity, placed.lmt_price) == (order_type, 5, 10.0)
    assert placed.cash_qty == (250.0 if cash else None)


def test_text_place_order_with_unknown_condition_is_malformed():
    version = 178
    good = read(version, lambda c: c.placeOrder(46, contract(), _busy(version, "LMT")))
    assert good.unread_fields == 0
    payload = ibapi_request(version, lambda c: c.placeOrder(46, contract(), _busy(version, "LMT")))[4:]
    with pytest.raises(MalformedMessage):
        R.read(version, decode(version, payload.replace(b"\x001\x00a\x00", b"\x002\x00a\x00", 1)))


@pytest.mark.parametrize("version", VERSIONS)
def test_cancels(version):
    cancel = OrderCancel()
    if version >= versions.MANUAL_ORDER_TIME:
        cancel.manualOrderCancelTime = "20300101 10:00:00"
    expected_time = cancel.manualOrderCancelTime
    assert read(version, lambda c: c.cancelOrder(44, cancel)) == R.CancelOrder(44, expected_time)
    assert read(version, lambda c: c.reqGlobalCancel(OrderCancel())) == R.GlobalCancel()


@pytest.mark.parametrize("version", VERSIONS)
def test_exercise_options(version):
    option = contract(
        "SPY",
        "OPT",
        conId=123456,
        lastTradeDateOrContractMonth="20300117",
        strike=600.0,
        right="P",
        multiplier="100",
        localSymbol="SPY   300117P00600000",
        tradingClass="SPY",
    )
    manual = "20300101 10:00:00" if version >= versions.MANUAL_ORDER_TIME_EXERCISE_OPTIONS else ""
    customer = "C1" if version >= versions.CUSTOMER_ACCOUNT else ""
    professional = version >= versions.PROFESSIONAL_CUSTOMER
    exercise = read(
        version, lambda c: c.exerciseOptions(45, option, R.LAPSE, 3, "DU1", 1, manual, customer, professional)
    )
    expected = R.Contract(
        123456,
        "SPY",
        "OPT",
        "20300117",
        600.0,
        "P",
        "100",
        "SMART",
        "",
        "USD",
        "SPY   300117P00600000",
        "SPY",
    )
    assert exercise == R.ExerciseOptions(
        45, expected, R.LAPSE, 3, "DU1", True, manual, customer, professional
    )


@pytest.mark.parametrize("version", [157, versions.PROTOBUF_PLACE_ORDER])
def test_truncated_requests_are_malformed(version):
    payload = ibapi_request(version, lambda c: c.placeOrder(46, contract(), order("BUY", 1, "MKT")))[4:]
    with pytest.raises(MalformedMessage):
        R.read(version, decode(version, payload[: len(payload) // 2]))


# ---- the layout ends where ibapi's does: no field left over, whatever the values ----------------------


@pytest.mark.parametrize("version", [v for v in VERSIONS if v < versions.PROTOBUF_PLACE_ORDER])
@pytest.mark.parametrize("increment", [math.inf, 0.5, -1.0, math.nan, UNSET_DOUBLE, 0.0])
def test_scale_fields_are_skipped_exactly_when_ibapi_sends_them(version, increment):
    """ibapi sends the 7 scale fields for any scalePriceIncrement above 0 but unset, infinity included:
    read otherwise, clearingAccount ("1") would be read as whatIf."""
    scaled = _order(version, "BUY", 1, "MKT", scalePriceIncrement=increment, clearingAccount="1")
    placed = read(version, lambda c: c.placeOrder(47, contract(), scaled))
    assert (placed.what_if, placed.unread_fields, placed.lmt_price) == (False, 0, None)


@pytest.mark.parametrize("version", [v for v in VERSIONS if v < versions.PROTOBUF_PLACE_ORDER])
@pytest.mark.parametrize("price", [math.inf, -math.inf, math.nan, UNSET_DOUBLE, -1e308])
def test_non_finite_prices_take_one_field_each(version, price):
    odd = _order(version, "BUY", 1, "LMT", lmtPrice=price, auxPrice=price, whatIf=False, clearingAccount="1")
    placed = read(version, lambda c: c.placeOrder(48, contract(), odd))
    assert (placed.what_if, placed.unread_fields) == (False, 0)
    expected = None if price in (math.inf, UNSET_DOUBLE) else price
    assert placed.lmt_price == expected or (math.isnan(price) and math.isnan(placed.lmt_price))


def test_a_lower_case_bag_is_read_with_its_legs():
    """The Java client sends legs for any case of BAG (ibapi only for "BAG"): the gate reads them as the
    gateway does. ibapi's "bag" order has no legs where they are read, so it does not end where it should."""
    legs = [_leg(111, 1, "BUY"), _leg(222, 2, "SELL")]
    version = 200
    frame = ibapi_request(
        version,
        lambda c: c.placeOrder(
            49, contract("SPY", "BAG", comboLegs=legs), _order(version, "BUY", 1, "LMT", lmtPrice=1.0)
        ),
    )
    payload = frame[4:]
    assert b"\x00BAG\x00" in payload
    lower = R.read(version, decode(version, payload.replace(b"\x00BAG\x00", b"\x00bag\x00", 1)))
    assert [leg.con_id for leg in lower.contract.combo_legs] == [111, 222]
    assert lower.unread_fields == 0
    ibapi_lower = contract("SPY", "bag", comboLegs=legs)
    try:
        misread = read(
            version, lambda c: c.placeOrder(50, ibapi_lower, _order(version, "BUY", 1, "LMT", lmtPrice=1.0))
        )
    except MalformedMessage:
        return
    assert misread.unread_fields != 0


@pytest.mark.parametrize("version", VERSIONS)
def test_discretionary_amount_and_adjusted_order_type(version):
    """What lets an order fill past its limit price: a discretionary amount, an adjustable stop's new type."""
    adjusts = version >= versions.PEGGED_TO_BENCHMARK
    fields = {"adjustedOrderType": "STP", "triggerPrice": 590.0} if adjusts else {}
    placed = read(
        version,
        lambda c: c.placeOrder(
            54,
            contract(),
            _order(version, "BUY", 1, "STP LMT", lmtPrice=600.0, discretionaryAmt=2.5, **fields),
        ),
    )
    assert (placed.discretionary_amt, placed.adjusted_order_type) == (2.5, "STP" if adjusts else "")
    assert (placed.lmt_price, placed.unread_fields) == (600.0, 0)


def test_protobuf_fields_unknown_to_ibapi_are_found_at_any_depth():
    from ibapi.protobuf import ComboLeg_pb2, ExerciseOptionsRequest_pb2, PlaceOrderRequest_pb2

    unknown = bytes([0xB8, 0x3E, 0x01])  # field 999 = 1
    leg = ComboLeg_pb2.ComboLeg(conId=1, ratio=1)
    leg.ParseFromString(leg.SerializeToString() + unknown)
    place = PlaceOrderRequest_pb2.PlaceOrderRequest(orderId=1)
    place.contract.comboLegs.append(leg)
    place.order.algoParams["a"] = "b"  # a map: its entries are not messages of the schema's own
    assert R.unknown_fields(place) == ("contract.comboLegs",)
    exercise = ExerciseOptionsRequest_pb2.ExerciseOptionsRequest(orderId=2)
    exercise.ParseFromString(exercise.SerializeToString() + unknown)
    assert R.unknown_fields(exercise) == ("ExerciseOptionsRequest",)
    assert R.unknown_fields(PlaceOrderRequest_pb2.PlaceOrderRequest(orderId=3)) == ()
