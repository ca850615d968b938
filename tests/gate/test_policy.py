"""The order policy on its own: what each app may send."""

from decimal import Decimal

import pytest

from ibgw_provision.gate.config import App
from ibgw_provision.gate.orders import OrderRequest
from ibgw_provision.gate.policy import Context, order_refusal
from ibgw_provision.gate.risk import AppRisk, ContractBook

LIMITED = App(
    name="limited",
    client_id=3,
    sources=["127.0.0.0/8"],
    read_only=False,
    max_order_quantity=5,
    allowed_sec_types=["STK"],
)


def _order(quantity: str, sec_type: str = "STK") -> OrderRequest:
    return OrderRequest("placeOrder", 1, "SPY", sec_type, "BUY", Decimal(quantity), "MKT")


@pytest.mark.parametrize(
    "quantity, sec_type, refused",
    [
        ("5", "STK", None),
        ("1", "STK", None),
        ("6", "STK", "above app limited's limit"),
        ("0", "STK", "must give a positive quantity"),  # a cash-quantity order: no share quantity
        ("1", "OPT", "secType OPT is not allowed"),
    ],
)
def test_limits(quantity, sec_type, refused):
    reason = order_refusal(LIMITED, _order(quantity, sec_type), Context(3, False, ContractBook(), AppRisk()))
    assert reason is None if refused is None else refused in reason
