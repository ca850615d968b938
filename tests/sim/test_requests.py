"""The simulator reads requests exactly as ibapi (every version) and ib_async encode them."""

from decimal import Decimal

import pytest
from ib_async import Client as IbAsyncClient
from ib_async import LimitOrder, MarketOrder, Option, Stock
from ibapi.execution import ExecutionFilter
from ibapi.order_cancel import OrderCancel

from ibgw_provision.sim import requests
from ibgw_provision.sim.config import MIN_VERSION
from ibgw_provision.sim.handlers import HANDLED
from ibgw_provision.sim.universe import ContractQuery
from ibgw_provision.tws import Out, codec, unframe, versions

from ..kit.sim import contract, ibapi_client, order


def _parse(version: int, data: bytes):
    [payload], rest = unframe(data)
    assert rest == b""
    return requests.parse(version, codec.decode(version, payload))


SPY = ContractQuery(0, "SPY", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "")
CALL = ContractQuery(0, "SPY", "OPT", "20250117", 600.0, "C", "100", "SMART", "", "USD", "", "")

IBAPI_CASES = [
    (lambda c: c.startApi(), requests.StartApi(7, "")),
    (lambda c: c.reqCurrentTime(), requests.NoArgs(Out.REQ_CURRENT_TIME)),
    (lambda c: c.reqIds(1), requests.ReqIds(1)),
    (lambda c: c.reqManagedAccts(), requests.NoArgs(Out.REQ_MANAGED_ACCTS)),
    (
        lambda c: c.reqContractDetails(
            5,
            contract(
                sec_type="OPT",
                lastTradeDateOrContractMonth="20250117",
                strike=600.0,
                right="C",
                multiplier="100",
            ),
        ),
        requests.ReqContractDetails(5, CALL),
    ),
    (
        lambda c: c.reqSecDefOptParams(6, "SPY", "", "STK", 756733),
        requests.ReqSecDefOptParams(6, "SPY", "", "STK", 756733),
    ),
    (
        lambda c: c.reqMktData(8, contract(), "233", False, False, []),
        requests.ReqMktData(8, SPY, "233", False, False),
    ),
    (
        lambda c: c.reqMktData(8, contract(), "", True, False, []),
        requests.ReqMktData(8, SPY, "", True, False),
    ),
    (lambda c: c.cancelMktData(8), requests.Cancel(Out.CANCEL_MKT_DATA, 8)),
    (lambda c: c.reqMarketDataType(3), requests.ReqMarketDataType(3)),
    (
        lambda c: c.reqHistoricalData(
            9, contract(), "20250117 16:00:00 US/Eastern", "1 D", "5 mins", "TRADES", 1, 1, False, []
        ),
        requests.ReqHistoricalData(
            9, SPY, "20250117 16:00:00 US/Eastern", "5 mins", "1 D", True, "TRADES", 1, False
        ),
    ),
    (lambda c: c.cancelHistoricalData(9), requests.Cancel(Out.CANCEL_HISTORICAL_DATA, 9)),
    (
        lambda c: c.placeOrder(
            11,
            contract(),
            order("BUY", 10, "LMT", lmtPrice=599.5, account="DU1", orderRef="r", outsideRth=True),
        ),
        requests.PlaceOrder(
            11, SPY, "BUY", Decimal(10), "LMT", 599.5, "", "DU1", "", "r", True, 0, True, False
        ),
    ),
    (
        lambda c: c.placeOrder(12, contract(), order("SELL", 3, "MKT", whatIf=True, tif="DAY")),
        requests.PlaceOrder(
            12, SPY, "SELL", Decimal(3), "MKT", None, "DAY", "", "", "", True, 0, False, True
        ),
    ),
    (lambda c: c.cancelOrder(11, OrderCancel()), requests.CancelOrder(11)),
    (lambda c: c.reqGlobalCancel(OrderCancel()), requests.NoArgs(Out.REQ_GLOBAL_CANCEL)),
    (lambda c: c.reqOpenOrders(), requests.NoArgs(Out.REQ_OPEN_ORDERS)),
    (lambda c: c.reqAllOpenOrders(), requests.NoArgs(Out.REQ_ALL_OPEN_ORDERS)),
    (lambda c: c.reqAutoOpenOrders(True), requests.ReqAutoOpenOrders(True)),
    (lambda c: c.reqCompletedOrders(True), requests.ReqCompletedOrders(True)),
    (lambda c: c.reqPositions(), requests.NoArgs(Out.REQ_POSITIONS)),
    (lambda c: c.cancelPositions(), requests.NoArgs(Out.CANCEL_POSITIONS)),
    (
        lambda c: c.reqAccountSummary(3, "All", "NetLiquidation,BuyingPower"),
        requests.ReqAccountSummary(3, "All", "NetLiquidation,BuyingPower"),
    ),
    (lambda c: c.cancelAccountSummary(3), requests.Cancel(Out.CANCEL_ACCOUNT_SUMMARY, 3)),
    (lambda c: c.reqAccountUpdates(True, "DU1"), requests.ReqAccountUpdates(True, "DU1")),
    (lambda c: c.reqAccountUpdatesMulti(4, "DU1", "", True), requests.ReqAccountUpdatesMulti(4, "DU1", "")),
    (lambda c: c.cancelAccountUpdatesMulti(4), requests.Cancel(Out.CANCEL_ACCOUNT_UPDATES_MULTI, 4)),
]


def _executions(client):
    execution_filter = ExecutionFilter()
    execution_filter.clientId, execution_filter.symbol, execution_filter.side = 7, "SPY", "BUY"
    client.reqExecutions(4, execution_filter)


@pytest.mark.parametrize("version", range(MIN_VERSION, versions.LATEST + 1))
def test_reads_every_request_ibapi_sends(version):
    for send, expected in IBAPI_CASES + [(_executions, requests.ReqExecutions(4, 7, "", "SPY", "", "BUY"))]:
        client = ibapi_client(version)
        send(client)
        assert _parse(version, client.conn.frames[-1]) == expected


def ib_async_client() -> IbAsyncClient:
    client = IbAsyncClient(wrapper=None)
    client._serverVersion, client.clientId = 178, 7
    client.connState = IbAsyncClient.CONNECTED
    return client


def test_reads_what_ib_async_sends():
    spy = Stock("SPY", "SMART", "USD")
    call = Option("SPY", "20250117", 600.0, "C", "SMART", "100", "USD")
    cases = [
        (lambda c: c.startApi(), requests.StartApi(7, "")),
        (lambda c: c.reqContractDetails(5, call), requests.ReqContractDetails(5, CALL)),
        (
            lambda c: c.reqSecDefOptParams(6, "SPY", "", "STK", 756733),
            requests.ReqSecDefOptParams(6, "SPY", "", "STK", 756733),
        ),
        (lambda c: c.reqMktData(8, spy, "", False, False, []), requests.ReqMktData(8, SPY, "", False, False)),
        (
            lambda c: c.reqHistoricalData(9, spy, "", "1 D", "5 mins", "TRADES", True, 2, False, []),
            requests.ReqHistoricalData(9, SPY, "", "5 mins", "1 D", True, "TRADES", 2, False),
        ),
        (
            lambda c: c.placeOrder(11, spy, LimitOrder("BUY", 10, 599.5, account="DU1")),
            requests.PlaceOrder(
                11, SPY, "BUY", Decimal(10), "LMT", 599.5, "", "DU1", "", "", True, 0, False, False
            ),
        ),
        (
            lambda c: c.placeOrder(12, spy, MarketOrder("SELL", 3, whatIf=True)),
            requests.PlaceOrder(
                12, SPY, "SELL", Decimal(3), "MKT", None, "", "", "", "", True, 0, False, True
            ),
        ),
        (lambda c: c.cancelOrder(11), requests.CancelOrder(11)),
        (lambda c: c.reqCompletedOrders(False), requests.ReqCompletedOrders(False)),
        (
            lambda c: c.reqAccountUpdatesMulti(4, "DU1", "", False),
            requests.ReqAccountUpdatesMulti(4, "DU1", ""),
        ),
    ]
    for send, expected in cases:
        client = ib_async_client()
        frames = []
        client.conn.sendMsg = frames.append
        send(client)
        assert _parse(178, frames[-1]) == expected


def test_every_request_read_has_a_handler():
    assert requests.PARSED == HANDLED
