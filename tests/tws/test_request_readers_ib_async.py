"""tws.requests reads ib_async's own placeOrder encoding to its last field, at every version ib_async
negotiates (157 to 178): the gate refuses a text order with fields left over, so none may be."""

import math

import pytest
from ib_async import order as ib
from ib_async.client import Client
from ib_async.contract import ComboLeg, Contract, DeltaNeutralContract, TagValue

from ibgw_provision.tws import decode
from ibgw_provision.tws import requests as R
from ibgw_provision.tws.errors import MalformedMessage

VERSIONS = list(range(Client.MinClientVersion, Client.MaxClientVersion + 1))


def ib_async_request(version: int, order_id: int, contract: Contract, order: ib.Order) -> bytes:
    """The payload ib_async's Client sends for placeOrder at `version`."""
    client = Client(wrapper=None)
    sent: list[str] = []
    client.sendMsg = sent.append  # the message before its length prefix
    client.connState, client._serverVersion = Client.CONNECTED, version
    client.placeOrder(order_id, contract, order)
    [message] = sent
    return message.encode()


def _conditions():
    return [
        ib.PriceCondition(conId=265598, exch="SMART", price=200.0),
        ib.TimeCondition(conjunction="o", time="20300101 10:00:00 US/Eastern"),
        ib.MarginCondition(percent=30),
        ib.ExecutionCondition(secType="STK", exch="SMART", symbol="AAPL"),
        ib.VolumeCondition(conId=265598, exch="SMART", volume=1000),
        ib.PercentChangeCondition(conId=265598, exch="SMART", changePercent=5.0),
    ]


ORDERS = {
    "plain": {},
    "busy": dict(
        deltaNeutralOrderType="LMT",
        deltaNeutralConId=9,
        scalePriceIncrement=0.5,
        hedgeType="D",
        hedgeParam="0.5",
        algoStrategy="Adaptive",
        algoParams=[TagValue("adaptivePriority", "Normal")],
        orderMiscOptions=[TagValue("a", "b")],
        conditions=_conditions(),
        cashQty=250.0,
    ),
    "peg bench": dict(orderType="PEG BENCH", referenceContractId=1, peggedChangeAmount=0.1),
    "peg mid": dict(orderType="PEG MID", midOffsetAtWhole=0.01, midOffsetAtHalf=0.005),
    "peg best to mid": dict(orderType="PEG BEST", minCompeteSize=100, competeAgainstBestOffset=math.inf),
    "peg best": dict(orderType="PEG BEST", minCompeteSize=100, competeAgainstBestOffset=0.02),
    "odd prices": dict(lmtPrice=math.nan, auxPrice=-math.inf, scalePriceIncrement=-1.0),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ORDERS)
def test_ib_async_orders_are_read_to_their_last_field(version, name):
    fields = {"orderType": "LMT", "lmtPrice": 10.0} | ORDERS[name]
    order = ib.Order(action="BUY", totalQuantity=5, clearingAccount="1", **fields)
    ats = Contract(symbol="AAPL", secType="STK", exchange="IBKRATS", currency="USD")
    ats.deltaNeutralContract = DeltaNeutralContract(conId=1, delta=0.5, price=1.0)
    placed = R.read(version, decode(version, ib_async_request(version, 51, ats, order)))
    assert (placed.unread_fields, placed.what_if, placed.order_type) == (0, False, fields["orderType"])
    assert placed.total_quantity == 5


@pytest.mark.parametrize("version", [Client.MinClientVersion, Client.MaxClientVersion])
def test_ib_async_combo_legs(version):
    legs = [ComboLeg(conId=111, ratio=1, action="BUY", exchange="SMART"), ComboLeg(conId=222, ratio=2)]
    bag = Contract(symbol="SPY", secType="BAG", exchange="SMART", currency="USD", comboLegs=legs)
    order = ib.LimitOrder("BUY", 3, 1.25, smartComboRoutingParams=[TagValue("NonGuaranteed", "1")])
    order.orderComboLegs = [ib.OrderComboLeg(price=1.0), ib.OrderComboLeg(price=0.25)]
    placed = R.read(version, decode(version, ib_async_request(version, 52, bag, order)))
    assert [leg.con_id for leg in placed.contract.combo_legs] == [111, 222]
    assert (placed.unread_fields, placed.lmt_price, placed.total_quantity) == (0, 1.25, 3)


def test_ib_async_infinite_scale_increment_is_not_ibapis_layout():
    """ib_async leaves the scale fields out for an infinite increment; ibapi and the Java client (and so
    the gateway) send them. The gate reads ibapi's layout: this order does not end where it should, and
    the gate refuses it as unreadable rather than guess which layout the gateway will read."""
    order = ib.Order(action="BUY", totalQuantity=1, orderType="MKT", scalePriceIncrement=math.inf)
    payload = ib_async_request(178, 53, Contract(symbol="SPY", secType="STK"), order)
    try:
        placed = R.read(178, decode(178, payload))
    except MalformedMessage:
        return
    assert placed.unread_fields != 0
