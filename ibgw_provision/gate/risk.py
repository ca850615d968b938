"""What the gate learns and counts to hold apps to their limits: the contracts the gateway described
(conId -> secType, multiplier), and per app its recent orders and its open orders. Bounded in memory."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque

from ..tws.responses import ContractFacts

MAX_CONTRACTS = 200_000  # conIds remembered, least recently described forgotten first
MAX_TRACKED_OPEN = 10_000  # open order ids remembered per app
WINDOW = 60.0  # seconds: max_orders_per_minute's sliding window
DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})  # an order in one of these is not open
# Errors that end the order they name: duplicate id, rejected, cancelled, no security definition,
# request validation, unsupported order type.
ENDS_ORDER = frozenset({103, 200, 201, 202, 203, 321, 387})


class ContractBook:
    """conId -> what the gateway said it is."""

    def __init__(self, capacity: int = MAX_CONTRACTS):
        self.capacity = capacity
        self._facts: OrderedDict[int, ContractFacts] = OrderedDict()

    def learn(self, facts: ContractFacts) -> None:
        if facts.con_id <= 0 or not facts.sec_type:
            return
        self._facts[facts.con_id] = facts
        self._facts.move_to_end(facts.con_id)
        if len(self._facts) > self.capacity:
            self._facts.popitem(last=False)

    def get(self, con_id: int) -> ContractFacts | None:
        return self._facts.get(con_id)

    def __len__(self) -> int:
        return len(self._facts)


class AppRisk:
    """One app's order counts: forwarded order times (last minute) and order ids still open.

    An error ends an open order only while the order has had no orderStatus yet (a rejected order gets
    an error and no status); once it has one, only a final status ends it. Reads share the order ids'
    number space, so an error that names an open order's id may be a read's."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque()
        self.open: set[int] = set()
        self.unconfirmed: set[int] = set()  # new orders forwarded that have had no orderStatus yet
        self.rebuilt: asyncio.Event | None = None  # set once the gateway has listed the open orders again

    def orders_last_minute(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        while self.recent and self.recent[0] <= now - WINDOW:
            self.recent.popleft()
        return len(self.recent)

    def forwarded(self, order_id: int | None, new_order: bool, limit: int | None) -> None:
        """Count an order request that went to the gateway (`limit`: the app's per-minute limit)."""
        if limit is not None:
            self.recent.append(time.monotonic())
            while len(self.recent) > limit:
                self.recent.popleft()
        if new_order and order_id is not None:
            self.opened(order_id)
            if order_id in self.open and len(self.unconfirmed) < MAX_TRACKED_OPEN:
                self.unconfirmed.add(order_id)

    def opened(self, order_id: int) -> None:
        if len(self.open) < MAX_TRACKED_OPEN:
            self.open.add(order_id)

    def status(self, order_id: int, status: str) -> None:
        if not status:
            return
        self.unconfirmed.discard(order_id)
        if status in DONE:
            self.open.discard(order_id)
        else:
            self.opened(order_id)

    def rebuild(self) -> None:
        """Forget the open orders: the gateway is asked for them again (orders may have ended meanwhile)."""
        self.open.clear()
        self.unconfirmed.clear()
        self.rebuilt = asyncio.Event()

    def listed(self) -> None:
        """The gateway's list of open orders is complete (openOrderEnd)."""
        if self.rebuilt is not None:
            self.rebuilt.set()

    def error(self, req_id: int, code: int) -> None:
        """An error that ends an order ends it only before its first orderStatus."""
        if code in ENDS_ORDER and req_id in self.unconfirmed:
            self.unconfirmed.discard(req_id)
            self.open.discard(req_id)
