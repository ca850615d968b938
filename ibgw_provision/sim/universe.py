"""The simulated instrument universe: SPY, QQQ and IWM stocks and their same-day option chains."""

from __future__ import annotations

from dataclasses import dataclass, field

OPTION_MULTIPLIER = "100"
STRIKES_EACH_SIDE = 30
OPTION_CON_ID_BASE = 800_000_000


@dataclass(frozen=True)
class Underlying:
    symbol: str
    con_id: int  # the real IB conId, so apps that cache conIds keep working
    primary_exchange: str
    long_name: str
    start_price: float
    index: int


UNDERLYINGS = (
    Underlying("SPY", 756733, "ARCA", "SPDR S&P 500 ETF TRUST", 600.0, 0),
    Underlying("QQQ", 320227571, "NASDAQ", "INVESCO QQQ TRUST SERIES 1", 520.0, 1),
    Underlying("IWM", 9579970, "ARCA", "ISHARES RUSSELL 2000 ETF", 220.0, 2),
)


@dataclass(frozen=True)
class Instrument:
    """A contract as IB describes it in contract details."""

    con_id: int
    symbol: str
    sec_type: str  # STK or OPT
    primary_exchange: str
    long_name: str
    expiry: str = ""  # YYYYMMDD, options only
    strike: float = 0.0
    right: str = ""  # C or P, options only
    multiplier: str = ""
    exchange: str = "SMART"
    currency: str = "USD"
    min_tick: float = 0.01
    under_con_id: int = 0
    local_symbol: str = field(default="")

    @property
    def is_option(self) -> bool:
        return self.sec_type == "OPT"

    @property
    def trading_class(self) -> str:
        return self.symbol

    @property
    def size_multiplier(self) -> int:
        return int(self.multiplier) if self.multiplier else 1


def stock(under: Underlying) -> Instrument:
    return Instrument(
        under.con_id, under.symbol, "STK", under.primary_exchange, under.long_name, local_symbol=under.symbol
    )


def option(under: Underlying, expiry: str, strike: float, right: str) -> Instrument:
    """An OCC-style option: local symbol like 'SPY   250117C00600000'."""
    con_id = OPTION_CON_ID_BASE + under.index * 10_000_000 + int(round(strike * 10)) * 2 + (right == "P")
    local = f"{under.symbol:<6}{expiry[2:]}{right}{int(round(strike * 1000)):08d}"
    return Instrument(
        con_id,
        under.symbol,
        "OPT",
        "",
        under.long_name,
        expiry,
        strike,
        right,
        OPTION_MULTIPLIER,
        under_con_id=under.con_id,
        local_symbol=local,
    )


@dataclass(frozen=True)
class ContractQuery:
    """The contract fields a client sends; empty or zero means 'any'."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""


def _right(text: str) -> str:
    return {"CALL": "C", "PUT": "P"}.get(text.upper(), text.upper())


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def matches(inst: Instrument, q: ContractQuery) -> bool:
    """IB-style matching: the conId alone decides when given, otherwise every given field must agree."""
    if q.con_id:
        return q.con_id == inst.con_id
    checks = (
        (q.symbol, lambda: q.symbol.upper() == inst.symbol),
        (q.sec_type, lambda: q.sec_type.upper() == inst.sec_type),
        (q.expiry, lambda: inst.expiry.startswith(q.expiry)),
        (q.strike, lambda: abs(q.strike - inst.strike) < 1e-6),
        (q.right, lambda: _right(q.right) == inst.right),
        (q.multiplier, lambda: _number(q.multiplier) == inst.size_multiplier),
        (q.exchange, lambda: q.exchange.upper() in ("SMART", inst.primary_exchange, "CBOE")),
        (q.currency, lambda: q.currency.upper() == inst.currency),
        (q.local_symbol, lambda: q.local_symbol.replace(" ", "") == inst.local_symbol.replace(" ", "")),
        (q.trading_class, lambda: q.trading_class.upper() == inst.trading_class),
    )
    return all(check() for given, check in checks if given)


class Universe:
    """All instruments, with lookups by conId, by query and by option chain."""

    def __init__(self, expiry: str):
        self.expiry = expiry
        self.instruments: dict[int, Instrument] = {}
        self.strikes: dict[str, tuple[float, ...]] = {}
        for under in UNDERLYINGS:
            self._add(stock(under))
            centre = round(under.start_price)
            strikes = tuple(float(centre + k) for k in range(-STRIKES_EACH_SIDE, STRIKES_EACH_SIDE + 1))
            self.strikes[under.symbol] = strikes
            for strike in strikes:
                for right in "CP":
                    self._add(option(under, expiry, strike, right))

    def _add(self, inst: Instrument) -> None:
        self.instruments[inst.con_id] = inst

    def find(self, query: ContractQuery) -> list[Instrument]:
        """Instruments matching `query`, which must name a conId, a symbol or a local symbol."""
        if not (query.con_id or query.symbol or query.local_symbol):
            return []
        return [inst for inst in self.instruments.values() if matches(inst, query)]

    def underlying(self, symbol: str = "", con_id: int = 0) -> Underlying | None:
        for under in UNDERLYINGS:
            if (con_id and under.con_id == con_id) or (not con_id and under.symbol == symbol.upper()):
                return under
        return None
