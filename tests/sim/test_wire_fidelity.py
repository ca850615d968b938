"""Every message the simulator sends, at every server version, read by the clients' own decoders.

ibapi must consume every text field, and decode the same values from text (old versions) as from
protobuf (the latest); ib_async must decode the text versions it negotiates without errors.
"""

from datetime import datetime
from decimal import Decimal

import pytest

from ibgw_provision.sim.broker import Execution, Margin, Order, Position
from ibgw_provision.sim.config import MIN_VERSION
from ibgw_provision.sim.market import NEW_YORK, Bar, Greeks
from ibgw_provision.sim.responses import Encoder
from ibgw_provision.sim.universe import ContractQuery, Universe
from ibgw_provision.tws import versions

from ..kit.sim import ib_async_decode, ibapi_decode

UNIVERSE = Universe("20250117")
SPY = UNIVERSE.find(ContractQuery(symbol="SPY", sec_type="STK"))[0]
CALL = UNIVERSE.find(ContractQuery(symbol="SPY", sec_type="OPT", strike=600, right="C"))[0]
WHEN = datetime(2025, 1, 17, 10, 0, tzinfo=NEW_YORK)


def _order(**changes) -> Order:
    fields = dict(
        client_id=3,
        order_id=11,
        perm_id=1000123,
        instrument=SPY,
        action="BUY",
        quantity=Decimal(10),
        order_type="LMT",
        lmt_price=599.5,
        tif="DAY",
        account="DU1234567",
        order_ref="ref",
    )
    return Order(**(fields | changes))


OPEN = _order()
FILLED = _order(
    status="Filled",
    filled=Decimal(10),
    avg_fill_price=599.5,
    last_fill_price=599.5,
    commission=1.0,
    completed_time="20250117 10:00:00 US/Eastern",
)
WHAT_IF = _order(
    what_if=True,
    status="PreSubmitted",
    commission=1.0,
    margin=Margin((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (7.0, 8.0, 9.0)),
)
FILL = Execution("00000001.000f4628.01.01", FILLED, WHEN, Decimal(10), 599.5, Decimal(10), 599.5, 1.0, None)
SHORT_CALL = Position("DU1234567", CALL, Decimal(-2), 250.0)
LONG_SPY = Position("DU1234567", SPY, Decimal(10), 6000.1)
BAR = Bar(WHEN, 1.0, 2.0, 0.5, 1.5, 1000, 1.25, 10)
GREEKS = Greeks(0.2, 0.5, 3.1, 0.01, 0.2, -0.5, 600.0)

MESSAGES = {
    "error": lambda e: e.error(7, 200, "No security definition has been found for the request"),
    "startup": lambda e: e.managed_accounts(["DU1", "DU2"]) + e.next_valid_id(42),
    "time": lambda e: e.current_time(1700000000),
    "time in millis": lambda e: e.current_time_millis(1700000000123),  # a client below 197 never asks
    "contract details": lambda e: e.contract_data(5, SPY) + e.contract_data(5, CALL) + e.contract_data_end(5),
    "option chain": lambda e: (
        e.sec_def_opt_params(6, "SMART", 756733, "SPY", "100", ["20250117"], [599.0, 600.0])
        + e.sec_def_opt_params_end(6)
    ),
    "market data": lambda e: (
        e.tick_req_params(8, 0.01)
        + e.market_data_type(8, 1)
        + e.tick_price(8, 1, 599.5, 100)
        + e.tick_price(8, 9, 600.0, None)
        + e.tick_size(8, 8, 1234)
        + e.tick_option(8, 13, GREEKS)
        + e.tick_snapshot_end(8)
    ),
    "historical data": lambda e: e.historical_data(9, [BAR], ["20250117 10:00:00 US/Eastern"], "a", "b"),
    "orders": lambda e: (
        e.open_order(OPEN)
        + e.order_status(OPEN)
        + e.open_order(FILLED)
        + e.order_status(FILLED)
        + e.open_order(WHAT_IF)
        + e.open_order_end()
    ),
    "completed orders": lambda e: e.completed_order(FILLED) + e.completed_orders_end(),
    "executions": lambda e: e.exec_details(-1, FILL) + e.commission_report(FILL) + e.exec_details_end(4),
    "positions": lambda e: e.position(SHORT_CALL) + e.position(LONG_SPY) + e.position_end(),
    "account": lambda e: (
        e.account_value("NetLiquidation", "100.00", "USD", "DU1")
        + e.portfolio_value(SHORT_CALL, 1.5)
        + e.portfolio_value(LONG_SPY, 600.5)
        + e.account_time("10:00")
        + e.account_download_end("DU1")
        + e.account_summary(3, "DU1", "NetLiquidation", "100.00", "USD")
        + e.account_summary_end(3)
        + e.account_update_multi(4, "DU1", "K", "V", "USD")
        + e.account_update_multi_end(4)
    ),
}
THRESHOLDS = set(versions.PROTOBUF_RESPONSE_SINCE.values())
VERSIONS = sorted(
    {
        MIN_VERSION,
        163,
        164,
        170,
        176,
        177,
        178,
        182,
        186,
        189,
        193,
        194,
        195,
        196,
        198,
        199,
        200,
        versions.LATEST,
    }
    | THRESHOLDS
    | {v - 1 for v in THRESHOLDS}
)
# Fields a text message only carries from some version on: (field names, version).
LATER_FIELDS = (
    (("minSize", "sizeIncrement", "suggestedSizeIncrement"), versions.SIZE_RULES),
    (("lastTradeDate",), versions.LAST_TRADE_DATE),
)


def _canonical(value, version):
    """Decoded objects as plain data. Empty and unset values (None, [], "", False, 0, unset margin
    text) compare equal: text and protobuf decoders leave different empty defaults."""
    if isinstance(value, (list, tuple, set)):
        items = [_canonical(v, version) for v in value]
        return (sorted(items, key=repr) if isinstance(value, set) else items) or None
    if type(value).__module__.startswith("ibapi.") and hasattr(value, "__dict__"):
        skipped = {name for names, since in LATER_FIELDS if version < since for name in names}
        return {k: _canonical(v, version) for k, v in vars(value).items() if k not in skipped}
    if value in ("1.7976931348623157E308", "", False):
        return None
    return value


def _decoded(version: int, name: str, compared_with: int) -> list:
    calls = ibapi_decode(version, MESSAGES[name](Encoder(version)))
    calls = [(n, args[:1] + args[2:]) if n == "error" else (n, args) for n, args in calls]  # errorTime varies
    return _canonical(calls, min(version, compared_with))


@pytest.mark.parametrize("name", MESSAGES)
@pytest.mark.parametrize("version", VERSIONS)
def test_ibapi_decodes_every_version_like_the_latest(version, name):
    assert _decoded(version, name, versions.LATEST) == _decoded(versions.LATEST, name, version)


def test_latest_version_decodes_to_the_intended_values():
    calls = dict(ibapi_decode(versions.LATEST, MESSAGES["orders"](Encoder(versions.LATEST))))
    order_id, contract, order, state = calls["openOrder"]
    assert (
        order_id,
        contract.conId,
        contract.symbol,
        order.action,
        order.totalQuantity,
        order.orderType,
    ) == (11, SPY.con_id, "SPY", "BUY", Decimal(10), "LMT")
    assert (order.lmtPrice, order.account, order.clientId, order.permId, order.whatIf) == (
        599.5,
        "DU1234567",
        3,
        1000123,
        True,
    )
    assert (state.status, state.initMarginChange, state.commissionAndFees) == ("PreSubmitted", "4.0", 1.0)
    details = [
        args[1]
        for name, args in ibapi_decode(
            versions.LATEST, MESSAGES["contract details"](Encoder(versions.LATEST))
        )
        if name == "contractDetails"
    ]
    assert [
        (d.contract.secType, d.contract.lastTradeDateOrContractMonth, d.contract.multiplier, d.underConId)
        for d in details
    ] == [("STK", "", "", 0), ("OPT", "20250117", "100", SPY.con_id)]


def test_volume_ticks_switch_from_lots_to_shares():
    assert Encoder(versions.MARKET_DATA_VOLUMES_IN_SHARES - 1).volume(12345) == 123
    assert Encoder(versions.MARKET_DATA_VOLUMES_IN_SHARES).volume(12345) == 12345


@pytest.mark.parametrize("version", [v for v in VERSIONS if v <= 178])
def test_ib_async_decodes_what_it_negotiates(version):
    calls = [
        call
        for name in MESSAGES
        if name != "time in millis"
        for call in ib_async_decode(version, MESSAGES[name](Encoder(version)))
    ]
    by_name = {}
    for name, args in calls:
        by_name.setdefault(name, []).append(args)
    order_id, contract, order, state = by_name["openOrder"][0]
    assert (order_id, contract.conId, order.lmtPrice, order.totalQuantity, state.status) == (
        11,
        SPY.con_id,
        599.5,
        10.0,
        "Submitted",
    )
    assert by_name["managedAccounts"] == [("DU1,DU2",)]
    assert by_name["nextValidId"] == [(42,)]
    assert [d[1].contract.conId for d in by_name["contractDetails"]] == [SPY.con_id, CALL.con_id]
    assert by_name["priceSizeTick"][0] == (8, 1, 599.5, 100.0)
    assert by_name["execDetails"][0][2].shares == 10.0
    assert by_name["position"][0][2] == -2.0
    assert by_name["completedOrder"][0][2].status == "Filled"
