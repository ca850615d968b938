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
    if order.unknown_fields and app.limited and order.request in NEW_ORDERS:
        return (
            f"app {app.name} has limits: the {order.request} carries fields the gate does not know "
            f"(in {', '.join(order.unknown_fields)}), so it cannot be judged"
        )
    if order.request == "placeOrder":
        return _place_refusal(app, order, ctx)
    if order.request == "exerciseOptions":
        return _exercise_refusal(app, order, ctx)
    return None


def _place_refusal(app: App, order: OrderRequest, ctx: Context) -> str | None:
    if order.client_id not in (None, 0, ctx.client_id):  # ibapi sends 0 when the app leaves it unset
        return f"the order's clientId {order.client_id} is not this connection's client id {ctx.client_id}"
    if order.attached_orders and app.limited:
        return "attached orders in one message are not judged: send them as separate placeOrder messages"
    for check in (
        _sized_by_tws,
        _allocation,
        _quantity,
        _cash,
        _sec_types,
        _legs,
        _notional,
        _rate,
        _open_orders,
    ):
        reason = check(app, order, ctx)
        if reason is not None:
            return reason
    return None


def _sized_by_tws(app: App, order: OrderRequest, ctx: Context) -> str | None:
    """Hedge and scale orders, whose size or price TWS works out after the gate has judged them."""
    if not app.limited:
        return None
    if order.hedge_type:
        return (
            f"app {app.name} has limits: a hedge order (hedgeType {order.hedge_type}) is sized by TWS from "
            "its parent and hedgeParam, so the gate cannot judge it"
        )
    if order.scale_fields:
        return (
            f"app {app.name} has limits: a scale order ({', '.join(order.scale_fields)} set) has components "
            "TWS places and reprices itself, so the gate cannot judge it"
        )
    return None


# Allocation methods that split the order's own quantity among the group's accounts.
SPLITTING_METHODS = frozenset({"EQUALQUANTITY", "EQUAL", "NETLIQ", "AVAILABLEEQUITY"})


def _allocation(app: App, order: OrderRequest, ctx: Context) -> str | None:
    """An FA allocation TWS may size the order by (a percentage change, a model, a group's own method)."""
    if app.max_order_quantity is None and app.max_notional_per_order is None:
        return None
    fa = order.allocation
    why = None
    if fa.fa_percentage:
        why = f"faPercentage {fa.fa_percentage!r}"
    elif fa.model_code:
        why = f"modelCode {fa.model_code!r}"
    elif fa.fa_method and fa.fa_method.upper() not in SPLITTING_METHODS:
        why = f"faMethod {fa.fa_method!r}"
    elif fa.fa_group and not fa.fa_method:
        why = f"faGroup {fa.fa_group!r} with the group's own method"
    if why is None:
        return None
    return (
        f"app {app.name} has a quantity or notional limit: an allocation ({why}) may change the order's "
        "quantity (allowed: faGroup with faMethod EqualQuantity, Equal, NetLiq or AvailableEquity)"
    )


def _exercise_refusal(app: App, order: OrderRequest, ctx: Context) -> str | None:
    for check in (_sec_types, _quantity, _notional, _rate):
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
    if quantity <= 0 and not order.cash_qty and (limit is not None or app.max_notional_per_order is not None):
        return f"app {app.name} has order limits: an order must give a positive quantity or a cashQty"
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
CAPPED_TYPES = ("LMT", "STP LMT", "LIT", "LOC", "LOO")  # order types whose fill lmtPrice caps
SELLS = frozenset({"SELL", "SSHORT", "SLONG"})


def _notional(app: App, order: OrderRequest, ctx: Context) -> str | None:
    """max_notional_per_order bounds what the gate can price: a BUY of one contract whose fill its limit
    price caps. What a limit price cannot bound (a SELL, whose limit is a floor; a combo, whose net price
    hides its legs' size; an exercise, which pays the strike) needs max_order_quantity as well."""
    limit = app.max_notional_per_order
    if limit is None or order.what_if:  # a margin preview is never placed
        return None
    mismatch = _multiplier_mismatch(order, ctx)
    if mismatch is not None:
        return f"app {app.name} has max_notional_per_order: {mismatch}"
    unbounded = _unbounded(order)
    if unbounded is None and order.action.upper() != "BUY":
        action = order.action or "(none)"
        return f"app {app.name} has max_notional_per_order: action {action} is not BUY or SELL"
    if unbounded is not None and app.max_order_quantity is None:
        return (
            f"app {app.name} has max_notional_per_order and no max_order_quantity: {unbounded}, "
            "so its notional cannot be bounded"
        )
    return _priced(app, order, ctx, limit, lower_bound=unbounded is not None)


def _unbounded(order: OrderRequest) -> str | None:
    """Why a limit price cannot bound this order's notional from above (None: it can, if it is a BUY)."""
    if order.request == "exerciseOptions":
        return "an exercise pays the strike"
    if order.sec_type.upper() == "BAG":
        return "a combo's net price hides its legs' size"
    if order.action.upper() in SELLS:
        return f"a {order.action.upper()}'s limit price is a floor, not a cap"
    return None


def _priced(app: App, order: OrderRequest, ctx: Context, limit: Decimal, lower_bound: bool) -> str | None:
    """A BUY's notional (an upper bound), or what quantity bounds: its notional's lower bound, if any."""
    if order.request == "exerciseOptions":
        return None  # bounded by max_order_quantity alone
    unknown = _unknown_con_id(order, ctx)
    if unknown is not None:
        return f"app {app.name} has max_notional_per_order: {unknown}"
    price, order_type, discretion = order.limit_price, order.order_type.upper(), order.discretionary_amt
    if price is not None and not math.isfinite(price):
        return f"app {app.name} has max_notional_per_order; the limit price {price} is not a number"
    if not (math.isfinite(discretion) and discretion >= 0):
        return f"app {app.name} has max_notional_per_order; discretionaryAmt {discretion} is not a price"
    if lower_bound:
        if order_type not in CAPPED_TYPES or price is None:
            return None  # no price bounds it from below: max_order_quantity bounds it
        floor = abs(price) if order.sec_type.upper() == "BAG" else max(price - discretion, 0.0)
        return _within(app, order, ctx, limit, Decimal(repr(floor)), lower_bound)
    cap = _cap(app, order)
    return cap if isinstance(cap, str) else _within(app, order, ctx, limit, Decimal(repr(cap)), lower_bound)


def _cap(app: App, order: OrderRequest) -> float | str:
    """The highest price a BUY may fill at: its limit price plus its discretionary amount; or why none."""
    price, order_type = order.limit_price, order.order_type.upper()
    if order.adjusted_order_type.upper() not in ("", "NONE"):
        return (
            f"app {app.name} has max_notional_per_order: an adjustable order becomes "
            f"{order.adjusted_order_type} once triggered, so its limit price does not cap it"
        )
    if order_type not in CAPPED_TYPES:
        return (
            f"app {app.name} has max_notional_per_order: a {order.order_type or '(typeless)'} order's price "
            "is not capped by a limit price, so its notional cannot be bounded "
            f"(send {', '.join(CAPPED_TYPES[:-1])} or {CAPPED_TYPES[-1]})"
        )
    if price is None or price <= 0:
        return (
            f"app {app.name} has max_notional_per_order: the limit price of a {order_type} BUY must be "
            f"a positive number, not {'(none)' if price is None else price}"
        )
    return price + order.discretionary_amt  # a discretionary amount lets a BUY fill above its limit


def _within(
    app: App, order: OrderRequest, ctx: Context, limit: Decimal, price: Decimal, lower_bound: bool
) -> str | None:
    """max(|quantity| x price x multiplier, cashQty) against the limit."""
    cash = order.cash_qty or 0.0
    if not math.isfinite(cash) or cash < 0:
        return f"app {app.name} has max_notional_per_order: cashQty {cash} is not a positive number"
    combo = order.sec_type.upper() == "BAG"
    multiplier = _combo_multiplier(order, ctx) if combo else _contract_multiplier(order, ctx)
    if multiplier is None:
        if lower_bound:
            return None
        what = order.sec_type or "contract"
        return (
            f"app {app.name} has max_notional_per_order; the multiplier of this {what} is unknown "
            "(the gateway gave none for its conId and its secType has no usual one)"
        )
    notional = max(abs(order.quantity or Decimal(0)) * price * multiplier, Decimal(repr(cash)))
    if notional > limit:
        return f"notional {notional:f} is above app {app.name}'s max_notional_per_order of {limit}"
    return None


def _unknown_con_id(order: OrderRequest, ctx: Context) -> str | None:
    """Why the contract's multiplier cannot be known: a conId (or a combo leg's) the gate has not learned."""
    if order.sec_type.upper() == "BAG":
        for n, leg in enumerate(order.legs, 1):
            if ctx.contracts.get(leg.con_id) is None:
                return f"combo leg {n}: conId {leg.con_id} is unknown to the gate{QUALIFY}"
        return None if order.legs else "the combo has no legs"
    if order.con_id and ctx.contracts.get(order.con_id) is None:
        return f"conId {order.con_id} is unknown to the gate, so its multiplier cannot be checked{QUALIFY}"
    return None


QUALIFY = " (qualify the contract with reqContractDetails first)"


def _contract_multiplier(order: OrderRequest, ctx: Context) -> Decimal | None:
    """The multiplier a notional is priced with: the largest of the order's own, the one the gateway gave
    for its conId and the usual one for its secType (STK, CASH 1, OPT 100: a floor), by the secType the
    gateway gave (the declared one for conId 0). None when neither the gateway nor the secType gives one:
    the order's own alone cannot be trusted (an app could declare 0.000001)."""
    learned, sec_type = _learned(order, ctx)
    trusted = [m for m in (_positive(learned), DEFAULT_MULTIPLIERS.get(sec_type.upper())) if m is not None]
    if not trusted:
        return None
    declared = _positive(order.multiplier)
    return max(trusted + ([declared] if declared is not None else []))


def _learned(order: OrderRequest, ctx: Context) -> tuple[str, str]:
    """(multiplier, secType) of the order's contract: the gateway's for a known conId, else ("", declared)."""
    if order.con_id and (facts := ctx.contracts.get(order.con_id)) is not None:
        return facts.multiplier, facts.sec_type
    return "", order.sec_type


def _multiplier_mismatch(order: OrderRequest, ctx: Context) -> str | None:
    """Why the order's own multiplier is not the one the gateway gave for its conId (None: it is, or
    either is empty)."""
    learned, _ = _learned(order, ctx)
    if not (order.multiplier and learned) or _same_number(order.multiplier, learned):
        return None
    return (
        f"the order's multiplier {order.multiplier!r} is not the gateway's {learned!r} "
        f"for conId {order.con_id}"
    )


def _positive(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except ArithmeticError:
        return None
    return value if value.is_finite() and value > 0 else None


def _same_number(a: str, b: str) -> bool:
    try:
        return Decimal(a) == Decimal(b)
    except ArithmeticError:
        return False


def _combo_multiplier(order: OrderRequest, ctx: Context) -> Decimal | None:
    """A combo's price is per unit of the combo: its legs' largest multiplier (None if a leg's is unknown)."""
    found = []
    for leg in order.legs:
        facts = ctx.contracts.get(leg.con_id)
        if facts is None:
            return None
        leg_order = OrderRequest("placeOrder", sec_type=facts.sec_type, con_id=leg.con_id)
        found.append(_contract_multiplier(leg_order, ctx))
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
