"""Prices: a seeded geometric random walk per underlying, options priced from it with Black-Scholes.

The walk advances one step per market tick, so the same seed gives the same price path. Option
quotes are a function of the walk and the time left to the 16:00 New York expiry.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .universe import UNDERLYINGS, Instrument, Underlying, Universe

NEW_YORK = ZoneInfo("America/New_York")
TIME_ZONE = "US/Eastern"  # how the gateway names New York time in dates it sends
ANNUAL_VOL = {"SPY": 0.16, "QQQ": 0.20, "IWM": 0.22}
RATE = 0.045
SECONDS_PER_YEAR = 365 * 24 * 3600
MIN_SECONDS_TO_EXPIRY = 900  # after the close, price options as if 15 minutes were left
SHARES_PER_SECOND = 2500


@dataclass(frozen=True, slots=True)
class Quote:
    bid: float
    ask: float
    last: float
    bid_size: int
    ask_size: int
    last_size: int
    volume: int


@dataclass(frozen=True, slots=True)
class Greeks:
    implied_vol: float
    delta: float
    price: float
    gamma: float
    vega: float
    theta: float
    und_price: float


@dataclass(frozen=True, slots=True)
class Bar:
    time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    wap: float
    count: int


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black_scholes(spot: float, strike: float, years: float, vol: float, right: str) -> tuple[float, ...]:
    """(price, delta, gamma, vega per vol point, theta per day) of a European option."""
    sqrt_t = math.sqrt(years)
    d1 = (math.log(spot / strike) + (RATE + 0.5 * vol * vol) * years) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    discount = math.exp(-RATE * years)
    gamma = _norm_pdf(d1) / (spot * vol * sqrt_t)
    vega = spot * _norm_pdf(d1) * sqrt_t / 100
    decay = -spot * _norm_pdf(d1) * vol / (2 * sqrt_t)
    if right == "C":
        price = spot * _norm_cdf(d1) - strike * discount * _norm_cdf(d2)
        delta = _norm_cdf(d1)
        theta = decay - RATE * strike * discount * _norm_cdf(d2)
    else:
        price = strike * discount * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
        delta = _norm_cdf(d1) - 1
        theta = decay + RATE * strike * discount * _norm_cdf(-d2)
    return price, delta, gamma, vega, theta / 365


def smile(spot: float, strike: float, base_vol: float) -> float:
    """Implied volatility rising away from the money."""
    return base_vol * (1 + 4 * abs(math.log(strike / spot)))


def _tick(price: float, tick: float = 0.01) -> float:
    return round(round(price / tick) * tick, 2)


def _size(step: int, con_id: int, low: int, high: int) -> int:
    """A deterministic pseudo-random size for this step and contract."""
    return low + (step * 2654435761 ^ con_id * 40503) % (high - low)


class Walk:
    """One underlying's seeded random walk, with the day's high, low and volume."""

    def __init__(self, under: Underlying, seed: int):
        self.rng = random.Random(seed * 1000 + under.index)
        self.vol = ANNUAL_VOL[under.symbol]
        self.price = self.close = self.high = self.low = under.start_price
        self.volume = 0

    def step(self, seconds: float) -> None:
        sigma = self.vol * math.sqrt(seconds / SECONDS_PER_YEAR)
        self.price *= math.exp(sigma * self.rng.gauss(0.0, 1.0) - 0.5 * sigma * sigma)
        self.high, self.low = max(self.high, self.price), min(self.low, self.price)
        self.volume += int(SHARES_PER_SECOND * seconds * (0.5 + self.rng.random()))


class Market:
    """Current prices for every instrument; `step` moves them on."""

    def __init__(self, universe: Universe, seed: int, start: datetime):
        self.universe = universe
        self.seed = seed
        self.now = start  # market time: the start plus the steps taken, so option prices repeat too
        self.walks = {u.con_id: Walk(u, seed) for u in UNDERLYINGS}
        self.step_no = 0
        self._quotes: dict[int, Quote] = {}
        self._expiry_close = datetime.strptime(universe.expiry, "%Y%m%d").replace(hour=16, tzinfo=NEW_YORK)

    def step(self, seconds: float) -> None:
        for walk in self.walks.values():
            walk.step(seconds)
        self.step_no += 1
        self.now += timedelta(seconds=seconds)
        self._quotes.clear()

    def walk(self, inst: Instrument) -> Walk:
        return self.walks[inst.under_con_id or inst.con_id]

    def years_to_expiry(self, at: datetime | None = None) -> float:
        left = (self._expiry_close - (at or self.now)).total_seconds()
        return max(left, MIN_SECONDS_TO_EXPIRY) / SECONDS_PER_YEAR

    def greeks(self, inst: Instrument) -> Greeks:
        spot = self.walk(inst).price
        vol = smile(spot, inst.strike, self.walk(inst).vol)
        price, delta, gamma, vega, theta = black_scholes(
            spot, inst.strike, self.years_to_expiry(), vol, inst.right
        )
        return Greeks(vol, delta, price, gamma, vega, theta, spot)

    def quote(self, inst: Instrument) -> Quote:
        quote = self._quotes.get(inst.con_id)
        if quote is None:
            quote = self._quotes[inst.con_id] = (
                self._option_quote(inst) if inst.is_option else self._stock_quote(inst)
            )
        return quote

    def _stock_quote(self, inst: Instrument) -> Quote:
        walk, step = self.walk(inst), self.step_no
        bid = _tick(walk.price - 0.005)
        return Quote(
            bid,
            _tick(bid + 0.01),
            _tick(walk.price),
            _size(step, inst.con_id, 100, 5000),
            _size(step + 1, inst.con_id, 100, 5000),
            _size(step + 2, inst.con_id, 1, 500),
            walk.volume,
        )

    def _option_quote(self, inst: Instrument) -> Quote:
        theo = self.greeks(inst).price
        half = max(0.01, _tick(theo * 0.02))
        bid = max(0.0, _tick(theo - half))
        ask = max(bid + 0.01, _tick(theo + half))
        step = self.step_no
        return Quote(
            bid,
            _tick(ask),
            _tick(max(theo, 0.01)),
            _size(step, inst.con_id, 1, 500),
            _size(step + 1, inst.con_id, 1, 500),
            _size(step + 2, inst.con_id, 1, 50),
            self.walk(inst).volume // 1000 + inst.con_id % 500,
        )

    def bars(self, inst: Instrument, times: list[datetime], bar_seconds: int) -> list[Bar]:
        """Bars starting at `times` (ascending), walking back from today's price; seeded, so they repeat."""
        walk = self.walk(inst)
        rng = random.Random(hash((self.seed, inst.under_con_id or inst.con_id, bar_seconds, len(times))))
        sigma = walk.vol * math.sqrt(bar_seconds / SECONDS_PER_YEAR)
        close, path = walk.price, []
        for start in reversed(times):
            open_ = close * math.exp(-sigma * rng.gauss(0.0, 1.0))
            spread = abs(close - open_) + close * sigma * abs(rng.gauss(0.0, 0.5))
            high, low = max(open_, close) + spread * rng.random(), min(open_, close) - spread * rng.random()
            path.append(self._bar(inst, start, (open_, high, low, close), bar_seconds, rng.random()))
            close = open_
        return path[::-1]

    def _bar(
        self, inst: Instrument, start: datetime, ohlc: tuple[float, ...], bar_seconds: int, activity: float
    ) -> Bar:
        if inst.is_option:
            price = self._option_price_at(inst, start + timedelta(seconds=bar_seconds))
            ohlc = tuple(price(x) for x in ohlc)
            ohlc = (ohlc[0], max(ohlc), min(ohlc), ohlc[3])
        o, h, lo, c = (_tick(x) for x in ohlc)
        volume = int(SHARES_PER_SECOND * bar_seconds * (0.5 + activity) / (100 if inst.is_option else 1))
        return Bar(start, o, h, lo, c, volume, _tick((h + lo + c) / 3), max(1, volume // 100))

    def _option_price_at(self, inst: Instrument, at: datetime):
        years = self.years_to_expiry(at)
        base = self.walk(inst).vol
        return lambda spot: black_scholes(
            spot, inst.strike, years, smile(spot, inst.strike, base), inst.right
        )[0]
