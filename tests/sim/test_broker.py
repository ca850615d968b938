"""Order, fill and position bookkeeping: average costs, P&L and cash with commissions."""

from decimal import Decimal

import pytest

from ibgw_provision.sim.broker import STARTING_CASH, Broker, Order, OrderRejected, account_values
from ibgw_provision.sim.market import Quote
from ibgw_provision.sim.universe import Universe

SPY = Universe("20250117").instruments[756733]
ACCOUNT = "DU1"


def _trade(broker: Broker, order_id: int, action: str, shares: int, price: float):
    order = broker.place(Order(1, order_id, 0, SPY, action, Decimal(shares), "MKT", None, "DAY", ACCOUNT))
    return broker.fill(order, Quote(price, price, price, 100, 100, 1, 0))


@pytest.mark.parametrize("opening, closing", [("BUY", "SELL"), ("SELL", "BUY")])
def test_a_round_trip_at_one_price_loses_exactly_the_commissions(opening, closing):
    broker = Broker([ACCOUNT], seed=1)
    _trade(broker, 1, opening, 100, 600.0)
    position = broker.accounts[ACCOUNT].position(SPY)
    values = account_values(broker.accounts[ACCOUNT], lambda inst: 600.0)
    assert float(values["UnrealizedPnL"][0]) == -1.0  # the opening commission, long or short
    assert position.avg_cost == (600.01 if opening == "BUY" else 599.99)
    closed = _trade(broker, 2, closing, 100, 600.0)
    assert closed.realized_pnl == pytest.approx(-2.0)
    assert broker.accounts[ACCOUNT].cash == pytest.approx(STARTING_CASH - 2.0)
    assert (position.quantity, position.avg_cost) == (0, 0.0)


@pytest.mark.parametrize("quantity", ["0", "-5", "NaN", "Infinity"])
def test_order_sizes_that_are_no_positive_number_are_refused(quantity):
    order = Order(1, 1, 0, SPY, "BUY", Decimal(quantity), "MKT", None, "DAY", ACCOUNT)
    with pytest.raises(OrderRejected) as refused:
        Broker([ACCOUNT], seed=1).place(order)
    assert refused.value.code == 434
