"""Orders, fills, executions, positions and account values of the simulated accounts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from ..tws.codes import Code
from .market import NEW_YORK, TIME_ZONE, Quote
from .universe import Instrument

STARTING_CASH = 1_000_000.0
SUPPORTED_ORDER_TYPES = ("MKT", "LMT")
OPEN_STATUSES = ("PreSubmitted", "Submitted")
ZERO = Decimal(0)


class OrderRejected(Exception):
    """An order the gateway refuses, with its TWS error code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Margin:
    """What-if margin figures: (initial, maintenance, equity with loan) before, change and after."""

    before: tuple[float, float, float]
    change: tuple[float, float, float]
    after: tuple[float, float, float]


@dataclass
class Order:
    client_id: int
    order_id: int
    perm_id: int
    instrument: Instrument
    action: str  # BUY or SELL
    quantity: Decimal
    order_type: str  # MKT or LMT
    lmt_price: float | None
    tif: str
    account: str
    order_ref: str = ""
    oca_group: str = ""
    outside_rth: bool = False
    parent_id: int = 0
    status: str = "Submitted"
    filled: Decimal = ZERO
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    commission: float = 0.0
    completed_time: str = ""
    what_if: bool = False
    margin: Margin | None = None

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def signed_remaining(self) -> Decimal:
        return self.remaining if self.action == "BUY" else -self.remaining

    def fill_price(self, quote: Quote) -> float | None:
        """The price this order trades at against `quote`, or None if it is not marketable."""
        price = quote.ask if self.action == "BUY" else quote.bid
        if price <= 0:
            return None
        if self.order_type == "LMT":
            limit = self.lmt_price
            if limit is None:  # validation refuses such an order
                return None
            marketable = price <= limit if self.action == "BUY" else price >= limit
            return price if marketable else None
        return price


@dataclass(frozen=True)
class Execution:
    exec_id: str
    order: Order
    time: datetime
    shares: Decimal
    price: float
    cum_qty: Decimal
    avg_price: float
    commission: float
    realized_pnl: float | None  # None when the fill opened or added to a position

    @property
    def side(self) -> str:
        return "BOT" if self.order.action == "BUY" else "SLD"


@dataclass
class Position:
    account: str
    instrument: Instrument
    quantity: Decimal = ZERO
    avg_cost: float = 0.0  # per share, times the multiplier, commissions included, as IB reports it

    def apply(self, signed_qty: Decimal, price: float, commission: float) -> float | None:
        """Book a fill; return the realized P&L if it reduced the position."""
        unit = price * self.instrument.size_multiplier
        qty, old = float(signed_qty), float(self.quantity)
        if old == 0 or (old > 0) == (qty > 0):
            # commission raises a long's cost and lowers a short's proceeds
            cost = unit * abs(qty) + (commission if qty > 0 else -commission)
            self.avg_cost = (self.avg_cost * abs(old) + cost) / abs(old + qty)
            self.quantity += signed_qty
            return None
        closed = min(abs(qty), abs(old))
        realized = (unit - self.avg_cost) * closed * (1 if old > 0 else -1) - commission
        self.quantity += signed_qty
        if self.quantity == 0:
            self.avg_cost = 0.0
        elif (float(self.quantity) > 0) != (old > 0):
            self.avg_cost = unit
        return realized


@dataclass
class Account:
    name: str
    cash: float = STARTING_CASH
    realized_pnl: float = 0.0
    positions: dict[int, Position] = field(default_factory=dict)

    def position(self, inst: Instrument) -> Position:
        return self.positions.setdefault(inst.con_id, Position(self.name, inst))


def _stamp(moment: datetime) -> str:
    return moment.strftime(f"%Y%m%d %H:%M:%S {TIME_ZONE}")


def commission_for(inst: Instrument, shares: Decimal, price: float) -> float:
    """IBKR Pro fixed pricing: $0.005/share (min $1, max 1% of value) or $0.65/contract (min $1)."""
    if inst.is_option:
        return round(max(1.0, 0.65 * float(shares)), 2)
    return round(min(max(1.0, 0.005 * float(shares)), 0.01 * float(shares) * price), 2)


class Broker:
    def __init__(self, accounts: list[str], seed: int):
        self.accounts = {name: Account(name) for name in accounts}
        self.seed = seed
        self.orders: dict[tuple[int, int], Order] = {}
        self.executions: list[Execution] = []
        self._next_perm_id = 1_000_000 + seed % 1000 * 1000
        self._next_order_id = 1

    @property
    def next_order_id(self) -> int:
        return self._next_order_id

    def place(self, order: Order) -> Order:
        """Accept a new order, or modify the open order with the same client and order id."""
        self.validate(order)
        existing = self.orders.get((order.client_id, order.order_id))
        if existing is not None:
            return self._modify(existing, order)
        order.perm_id = self._next_perm_id
        self._next_perm_id += 1
        self._next_order_id = max(self._next_order_id, order.order_id + 1)
        self.orders[(order.client_id, order.order_id)] = order
        return order

    def validate(self, order: Order) -> None:
        if order.order_type not in SUPPORTED_ORDER_TYPES:
            raise OrderRejected(
                Code.UNSUPPORTED_ORDER_TYPE, "Unsupported order type for this exchange and security type."
            )
        if order.action not in ("BUY", "SELL"):
            raise OrderRejected(
                Code.REQUEST_VALIDATION_ERROR,
                f"Error validating request.-'bN' : cause - Invalid side: {order.action}",
            )
        if not order.quantity.is_finite() or order.quantity <= 0:
            raise OrderRejected(Code.ZERO_ORDER_SIZE, "The order size cannot be zero.")
        if order.order_type == "LMT" and not (order.lmt_price and math.isfinite(order.lmt_price)):
            raise OrderRejected(
                Code.REQUEST_VALIDATION_ERROR,
                "Error validating request.-'bN' : cause - The limit price is missing.",
            )
        if order.account not in self.accounts:
            raise OrderRejected(
                Code.REQUEST_VALIDATION_ERROR,
                f"Error validating request.-'bN' : cause - Unknown account {order.account}",
            )

    def _modify(self, existing: Order, new: Order) -> Order:
        if not existing.is_open:
            raise OrderRejected(
                Code.MODIFY_FILLED_ORDER if existing.status == "Filled" else Code.DUPLICATE_ORDER_ID,
                "Can't modify a filled order." if existing.status == "Filled" else "Duplicate order id",
            )
        if new.instrument.con_id != existing.instrument.con_id or new.action != existing.action:
            raise OrderRejected(Code.MODIFY_MISMATCH, "Order being modified does not match original order.")
        existing.quantity, existing.lmt_price, existing.order_type = (
            new.quantity,
            new.lmt_price,
            new.order_type,
        )
        existing.tif, existing.order_ref, existing.outside_rth = new.tif, new.order_ref, new.outside_rth
        return existing

    def fill(self, order: Order, quote: Quote) -> Execution | None:
        """Fill the whole remaining quantity if `quote` makes the order marketable."""
        price = order.fill_price(quote) if order.is_open else None
        if price is None:
            return None
        shares, signed = order.remaining, order.signed_remaining
        commission = commission_for(order.instrument, shares, price)
        account = self.accounts[order.account]
        realized = account.position(order.instrument).apply(signed, price, commission)
        account.cash -= float(signed) * price * order.instrument.size_multiplier + commission
        account.realized_pnl += realized or 0.0
        order.avg_fill_price = price
        order.last_fill_price, order.filled, order.status = price, order.quantity, "Filled"
        order.commission += commission
        now = datetime.now(NEW_YORK)
        order.completed_time = _stamp(now)
        execution = Execution(
            f"{self.seed & 0xFFFFFFFF:08x}.{order.perm_id:08x}.01.01",
            order,
            now,
            shares,
            price,
            order.filled,
            order.avg_fill_price,
            commission,
            realized,
        )
        self.executions.append(execution)
        return execution

    def cancel(self, client_id: int, order_id: int) -> Order:
        order = self.orders.get((client_id, order_id))
        if order is None or not order.is_open:
            raise OrderRejected(
                Code.ORDER_TO_CANCEL_NOT_FOUND, f"OrderId {order_id} that needs to be cancelled is not found."
            )
        order.status = "Cancelled"
        order.completed_time = _stamp(datetime.now(NEW_YORK))
        return order

    def open_orders(self, client_id: int | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open and client_id in (None, o.client_id)]

    def completed_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if not o.is_open]

    def positions(self) -> list[Position]:
        return [p for a in self.accounts.values() for p in a.positions.values()]


def _money(value: float) -> tuple[str, str]:
    return f"{value:.2f}", "USD"


def account_values(account: Account, mark) -> dict[str, tuple[str, str]]:
    """Account tags -> (value, currency), marking positions with `mark(instrument) -> price`."""
    held = [p for p in account.positions.values() if p.quantity]
    values = [float(p.quantity) * mark(p.instrument) * p.instrument.size_multiplier for p in held]
    unrealized = sum(v - float(p.quantity) * p.avg_cost for v, p in zip(values, held, strict=True))
    gross = sum(abs(v) for v in values)
    net_liq = account.cash + sum(values)
    margin = 0.25 * gross
    return {
        "AccountType": ("INDIVIDUAL", ""),
        "NetLiquidation": _money(net_liq),
        "TotalCashValue": _money(account.cash),
        "SettledCash": _money(account.cash),
        "EquityWithLoanValue": _money(net_liq),
        "GrossPositionValue": _money(gross),
        "InitMarginReq": _money(margin),
        "MaintMarginReq": _money(margin),
        "AvailableFunds": _money(net_liq - margin),
        "ExcessLiquidity": _money(net_liq - margin),
        "BuyingPower": _money(4 * (net_liq - margin)),
        "Cushion": (f"{(net_liq - margin) / net_liq:.4f}" if net_liq else "0", ""),
        "UnrealizedPnL": _money(unrealized),
        "RealizedPnL": _money(account.realized_pnl),
    }
