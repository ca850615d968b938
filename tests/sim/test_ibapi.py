"""ibapi-latest against the simulator, at its top version (protobuf), a mixed one and a text one."""

from datetime import datetime
from decimal import Decimal

import pytest
from ibapi.order_cancel import OrderCancel

from ibgw_provision.sim.market import NEW_YORK
from ibgw_provision.tws import versions

from ..kit.sim import IbapiApp, contract, order

SPY_CON_ID = 756733


@pytest.fixture(
    params=[versions.LATEST, versions.PROTOBUF_MARKET_DATA, versions.PROTOBUF - 1],
    ids=["protobuf", "mixed", "text"],
)
def app(request, start_sim):
    sim = start_sim(max_version=request.param)
    app = IbapiApp().start(sim.port, client_id=1)
    yield app
    app.stop()


def test_connects_and_reads_accounts(app, request):
    assert app.client.serverVersion() == request.node.callspec.params["app"]
    assert app.wait("managedAccounts") == [("DU1234567",)]
    notices = app.wait("error", lambda req_id, when, code, *rest: req_id == -1, count=3)
    assert [code for _, _, code, *_ in notices] == [2104, 2106, 2158]
    app.client.reqCurrentTime()
    assert app.wait("currentTime")[0][0] > 1_600_000_000


def test_spy_details_and_0dte_option_chain(app):
    app.client.reqContractDetails(1, contract())
    [(_, details)] = app.wait("contractDetails", lambda req_id, d: req_id == 1)
    assert (details.contract.conId, details.contract.primaryExchange, details.stockType) == (
        SPY_CON_ID,
        "ARCA",
        "ETF",
    )
    app.client.reqSecDefOptParams(2, "SPY", "", "STK", SPY_CON_ID)
    app.wait("securityDefinitionOptionParameterEnd")
    [(_, exchange, _, trading_class, multiplier, expirations, strikes)] = app.received(
        "securityDefinitionOptionParameter", lambda req_id, exchange, *rest: exchange == "SMART"
    )
    today = datetime.now(NEW_YORK).strftime("%Y%m%d")
    assert (trading_class, multiplier, expirations) == ("SPY", "100", {today})
    app.client.reqContractDetails(3, contract(sec_type="OPT", lastTradeDateOrContractMonth=today))
    app.wait("contractDetailsEnd", lambda req_id: req_id == 3)
    chain = [d.contract for req_id, d in app.received("contractDetails") if req_id == 3]
    assert len(chain) == 2 * len(strikes) and {c.strike for c in chain} == strikes
    assert {(c.lastTradeDateOrContractMonth, c.multiplier) for c in chain} == {(today, "100")}


def test_streams_ticks(app):
    app.client.reqMktData(4, contract(), "", False, False, [])
    ticks = app.wait(
        "tickPrice", lambda req_id, tick_type, price, attrib: req_id == 4 and tick_type == 1, count=5
    )
    assert all(590 < price < 610 for _, _, price, _ in ticks)
    app.client.cancelMktData(4)


def test_market_order_fills_with_execution_and_position(app):
    app.client.reqPositions()
    app.wait("positionEnd")
    order_id = app.wait("nextValidId")[0][0]
    app.client.placeOrder(order_id, contract(), order("BUY", 10, "MKT"))
    statuses = app.wait("orderStatus", lambda oid, status, *rest: oid == order_id and status == "Filled")
    assert statuses[0][2:4] == (Decimal(10), Decimal(0))
    [(req_id, executed, execution)] = app.wait("execDetails")
    assert (executed.conId, execution.orderId, execution.shares, execution.side) == (
        SPY_CON_ID,
        order_id,
        Decimal(10),
        "BOT",
    )
    [(report,)] = app.wait("commissionAndFeesReport")
    assert (report.execId, report.commissionAndFees) == (execution.execId, 1.0)
    [(account, held, quantity, avg_cost)] = app.wait("position")
    assert (account, held.conId, quantity) == ("DU1234567", SPY_CON_ID, Decimal(10))
    assert avg_cost == pytest.approx(execution.price + 0.1)  # $1 commission over 10 shares


def test_limit_order_rests_then_cancels(app):
    order_id = app.wait("nextValidId")[0][0]
    app.client.placeOrder(order_id, contract(), order("BUY", 5, "LMT", lmtPrice=100.0))
    app.wait("orderStatus", lambda oid, status, *rest: status == "Submitted")
    [(_, _, placed, state)] = app.wait("openOrder")
    assert (placed.orderType, placed.lmtPrice, placed.totalQuantity, state.status) == (
        "LMT",
        100.0,
        5,
        "Submitted",
    )
    app.client.cancelOrder(order_id, OrderCancel())
    app.wait("orderStatus", lambda oid, status, *rest: status == "Cancelled")
    assert app.wait("error", lambda req_id, when, code, *rest: code == 202)[0][0] == order_id
    assert not app.received("execDetails")
