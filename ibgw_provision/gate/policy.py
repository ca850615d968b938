"""What the gate refuses, and why: connections by client id and source, order requests by app rules."""

from __future__ import annotations

from collections.abc import Container

from ..tws.codes import Code
from .config import App, GateConfig, IPAddress
from .orders import NEW_ORDERS, OrderRequest

REFUSED = "refused by ibgw gate: "
CONNECT_FAILED = Code.CONNECT_FAIL  # ibapi's "Couldn't connect to TWS": the app cannot log on
CLIENT_ID_IN_USE = Code.CLIENT_ID_IN_USE  # what the gateway itself answers to a duplicate client id
REQUEST_REFUSED = Code.REQUEST_VALIDATION_ERROR  # what a read-only API answers to orders


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


def order_refusal(app: App, halted: bool, order: OrderRequest) -> str | None:
    """Why `order` from `app` is refused, or None to forward it."""
    if app.read_only:
        return f"app {app.name} is read-only"
    if halted and order.request in NEW_ORDERS:
        return "trading is halted (ibgw gate halt); no new orders until ibgw gate resume"
    if order.request != "placeOrder":
        return None
    quantity = order.quantity or 0  # placeOrder always has one
    if app.max_order_quantity is not None and quantity > app.max_order_quantity:
        return f"quantity {quantity} is above app {app.name}'s limit of {app.max_order_quantity}"
    if app.max_order_quantity is not None and quantity <= 0:
        # A cash-quantity order has no share quantity: its size cannot be held to the limit.
        return f"app {app.name} has a quantity limit: an order must give a positive quantity (not cashQty)"
    if app.allowed_sec_types is not None and order.sec_type.upper() not in app.allowed_sec_types:
        return (
            f"secType {order.sec_type or '(none)'} is not allowed for app {app.name} "
            f"(allowed: {', '.join(app.allowed_sec_types)})"
        )
    return None
