"""What the gate refuses, and why: connections by client id and source, requests and orders by app rules."""

from __future__ import annotations

import math
from collections.abc import Container
from dataclasses import dataclass
from decimal import Decimal

from ..tws import requests_policy
from ..tws.codes import Code
from ..tws.requests_policy import Kind
from .config import App, GateConfig, IPAddress
from .orders import NEW_ORDERS, OrderRequest
from .risk import AppRisk, ContractBook

REFUSED = "refused by ibgw gate: "
CONNECT_FAILED = Code.CONNECT_FAIL  # ibapi's "Couldn't connect to TWS": the app cannot log on
CLIENT_ID_IN_USE = Code.CLIENT_ID_IN_USE  # what the gateway itself answers to a duplicate client id
REQUEST_REFUSED = Code.REQUEST_VALIDATION_ERROR  # what a read-only API answers to orders
PROBE_REQUESTS = frozenset({"reqCurrentTime", "reqCurrentTimeInMillis"})  # all a probe_only app may ask


def connection_refusal(
    config: GateConfig, client_id: int, source: IPAddress, connected: Container[int]
) -> tuple[int, str] | None:
    """(error code, reason) to refuse a START_API for `client_id` from `source`; None admits it."""
    app = config.apps_by_client_id.get(client_id)
    if app is None:
        return CONNECT_FAILED, f"client id {client_id} is not registered for the {config.mode} gateway"
    if not app.allows(source):
        return CONNECT_FAILED, f"client id {client_id} (app {app.name}) may not connect from {source}"
    if client_id in connected:
        return CLIENT_ID_IN_USE, (
            f"client id {client_id} (app {app.name}) is already connected through this gate; "
            "the client id is already in use"
        )
    return None


def request_refusal(app: App, halted: bool, msg_id: int, client_id: int) -> str | None:
    """Why a request that is not an order request is refused, or None to forward it.

    Read-only apps, and every app while halted, may send known reads only. Settings requests need
    `allow_settings` (and neither read-only nor a halt); session requests (verify*) never pass after
    START_API. Unknown ids pass only for a trading app with no limit, while trading is open: one the
    gate cannot read could carry an order its limits would refuse.
    """
    if app.probe_only and requests_policy.name(msg_id) not in PROBE_REQUESTS:
        return f"{requests_policy.name(msg_id)} is not allowed for app {app.name}: it may only ask the time"
    if requests_policy.is_read(msg_id, client_id):
        return None
    kind = requests_policy.kind(msg_id)
    what = f"{requests_policy.name(msg_id)} ({kind.value if kind else 'unknown'} request)"
    if kind is Kind.SESSION:
        return f"{what} is not allowed after START_API"
    if kind is Kind.SETTINGS and not (app.read_only or halted or app.allow_settings):
        return f"{what} is not allowed for app {app.name} (allow_settings is off)"
    if kind is None and app.limited and not app.read_only and not halted:
        return f"{what} is not allowed for app {app.name}: it has order limits the gate could not apply"
    return requests_policy.refusal(msg_id, read_only=app.read_only, halted=halted, client_id=client_id)


@dataclass(frozen=True)
class Context:
    """What an order is judged against besides the app's rules."""

    client_id: int  # the connection's
    halted: bool
    contracts: ContractBook
    risk: AppRisk


def order_refusal(app: App, order: OrderRequest, ctx: Context) -> str | None:
    """Why `order` from `app` is refused, or None to forward it."""
    if app.read_only:
        return f"app {app.name} is read-only"
    if order.request == "reqGlobalCancel" and not app.global_cancel_allowed:
        return f"reqGlobalCancel cancels every app's orders: app {app.name} does not have allow_global_cancel"
    if ctx.halted and order.request in NEW_ORDERS:
        return "trading is halted (ibgw gate halt); no new orders until ibgw gate resume"
    if order.request == "placeOrder":
        return _place_refusal(app, order, ctx)
    if order.request == "exerciseOptions":
        return _exercise_refusal(app, order, ctx)
    return None


def _place_refusal(app: App, order: OrderRequest, ctx: Context) -> str | None:
    if order.client_id not in (None, 0, ctx.client_id):  # ibapi sends 0 when the app leaves it unset
        return f"the order's clientId {order.client_id} is not this connection's client id {ctx.client_id}"
    for check in (_quantity, _cash, _sec_types, _legs, _notional, _rate, _open_orders):
        reason = check(app, order, ctx)
        if reason is not None:
            return reason
    return None


def _exercise_refusal(app: App, order: OrderRequest, ctx: Context) -> str | None:
    for check in (_sec_types, _quantity, _rate):
        reason = check(app, order, ctx)
        if reason is not None:
            return reason
    return None


def _quantity(app: App, order: OrderRequest, ctx: Context) -> str | None:
    quantity, limit = order.quantity or 0, app.max_order_quantity
    if limit is not None and quantity > limit:
        return f"quantity {quantity} is above app {app.name}'s limit of {limit}"
    if limit is not None and quantity <= 0 and order.request == "placeOrder":
        # A cash-quantity order has no share quantity: its size cannot be held to the limit.
        return f"app {app.name} has a quantity limit: an order must give a positive quantity (not cashQty)"
    return None


def _cash(app: App, order: OrderRequest, ctx: Context) -> str | None:
    cash = order.cash_qty
    if cash is None or cash == 0:
        return None
    if app.max_cash_quantity is not None:
        if not 0 < cash <= app.max_cash_quantity:
            limit = app.max_cash_quantity
            return f"cashQty {cash:g} is outside app {app.name}'s max_cash_quantity of {limit}"
        return None
    if app.max_order_quantity is not None:
        return f"app {app.name} has a quantity limit and no max_cash_quantity: cashQty orders are refused"
    return None


def _sec_type(app: App, con_id: int, declared: str, ctx: Context, what: str) -> str | None:
    """Why the contract (`con_id`, `declared` secType) is not one `app` may trade."""
    allowed = app.allowed_sec_types
    if allowed is None:
        return None
    sec_type = declared.upper()
    if con_id:
        facts = ctx.contracts.get(con_id)
        if facts is None:
            return (
                f"{what}conId {con_id} is unknown to the gate, so its secType cannot be checked "
                "(qualify the contract with reqContractDetails first)"
            )
        sec_type = facts.sec_type.upper()
    if sec_type not in allowed:
        via = f" (conId {con_id})" if con_id and sec_type != declared.upper() else ""
        return (
            f"{what}secType {sec_type or '(none)'}{via} is not allowed for app {app.name} "
            f"(allowed: {', '.join(allowed)})"
        )
    return None


def _sec_types(app: App, order: OrderRequest, ctx: Context) -> str | None:
    return _sec_type(app, order.con_id, order.sec_type, ctx, "")


def _legs(app: App, order: OrderRequest, ctx: Context) -> str | None:
    if order.sec_type.upper() != "BAG":
        return None
    limit, quantity = app.max_order_quantity, order.quantity or 0
    for n, leg in enumerate(order.legs, 1):
        reason = _sec_type(app, leg.con_id, "", ctx, f"combo leg {n}: ")
        if reason is not None:
            return reason
        if limit is not None and quantity * abs(leg.ratio) > limit:
            return (
                f"combo leg {n}: quantity {quantity} x ratio {leg.ratio} "
                f"is above app {app.name}'s limit of {limit}"
            )
    return None


DEFAULT_MULTIPLIERS = {"STK": Decimal(1), "CASH": Decimal(1), "OPT": Decimal(100)}


def _multiplier(order: OrderRequest, ctx: Context) -> Decimal | None:
    """The contract's multiplier: as the order gives it, else as the gateway described the conId, else
    the usual one for STK, CASH (1) and OPT (100); None when unknown."""
    texts = [order.multiplier]
    if order.con_id and (facts := ctx.contracts.get(order.con_id)) is not None:
        texts.append(facts.multiplier)
    for text in texts:
        try:
            value = Decimal(text)
        except ArithmeticError:
            continue
        if value.is_finite() and value > 0:
            return value
    return DEFAULT_MULTIPLIERS.get(order.sec_type.upper())


def _notional(app: App, order: OrderRequest, ctx: Context) -> str | None:
    """quantity x limit price x multiplier; an order the gate cannot price is refused under the limit."""
    limit, price = app.max_notional_per_order, order.limit_price
    if limit is None or order.what_if:  # a margin preview is never placed
        return None
    if price is None:
        return (
            f"app {app.name} has max_notional_per_order: a {order.order_type or 'market'} order without a "
            "limit price cannot be priced (send a limit order)"
        )
    if not math.isfinite(price):  # NaN or infinity: no notional can be judged, so no order passes
        return f"app {app.name} has max_notional_per_order; the limit price {price} is not a number"
    multiplier = _combo_multiplier(order, ctx) if order.sec_type.upper() == "BAG" else _multiplier(order, ctx)
    if multiplier is None:
        return (
            f"app {app.name} has max_notional_per_order; the multiplier of this {order.sec_type} is unknown"
        )
    notional = (order.quantity or 0) * Decimal(repr(abs(price))) * multiplier
    if notional > limit:
        return f"notional {notional:f} is above app {app.name}'s max_notional_per_order of {limit}"
    return None


def _combo_multiplier(order: OrderRequest, ctx: Context) -> Decimal | None:
    """A combo's price is per unit of the combo: its legs' largest multiplier, as the gateway gave each
    leg's conId (None if a leg is unknown)."""
    found = []
    for leg in order.legs:
        facts = ctx.contracts.get(leg.con_id)
        if facts is None:
            return None
        leg_order = OrderRequest("placeOrder", sec_type=facts.sec_type, con_id=leg.con_id)
        found.append(_multiplier(leg_order, ctx))
    known = [m for m in found if m is not None]
    return max(known) if known and len(known) == len(found) else None


def _rate(app: App, order: OrderRequest, ctx: Context) -> str | None:
    limit = app.max_orders_per_minute
    if limit is not None and ctx.risk.orders_last_minute() >= limit:
        return f"app {app.name} has sent {limit} orders in the last minute (max_orders_per_minute)"
    return None


def _open_orders(app: App, order: OrderRequest, ctx: Context) -> str | None:
    limit = app.max_open_orders
    if limit is None or order.what_if or order.order_id in ctx.risk.open:
        return None  # a margin preview, or a change to an open order, opens no order
    if len(ctx.risk.open) >= limit:
        return f"app {app.name} has {len(ctx.risk.open)} open orders (max_open_orders {limit})"
    return None
