"""The synthetic universe, the seeded random walk, option pricing and historical bar requests."""

import math
from datetime import datetime

import pytest

from ibgw_provision.sim import history
from ibgw_provision.sim.market import NEW_YORK, RATE, Market, black_scholes
from ibgw_provision.sim.requests import ReqHistoricalData
from ibgw_provision.sim.universe import ContractQuery, Universe

UNIVERSE = Universe("20250117")
SPY = UNIVERSE.instruments[756733]


NOW = datetime(2025, 1, 17, 12, 2, 30, tzinfo=NEW_YORK)


def _path(seed: int, steps: int = 50) -> list[tuple]:
    market = Market(UNIVERSE, seed, NOW)
    call = UNIVERSE.find(ContractQuery(symbol="SPY", right="C", strike=600))[0]
    path = []
    for _ in range(steps):
        market.step(1.0)
        path.append((market.quote(SPY), market.quote(call)))
    return path


def test_the_same_seed_repeats_the_same_prices():
    assert _path(seed=7) == _path(seed=7)
    assert _path(seed=7) != _path(seed=8)


def test_quotes_are_sane():
    for stock, option in _path(seed=3):
        assert 0 < stock.bid < stock.ask and stock.ask - stock.bid == pytest.approx(0.01)
        assert 0 <= option.bid < option.ask


def test_put_call_parity():
    years = 30 / 365
    call = black_scholes(600.0, 610.0, years, 0.2, "C")[0]
    put = black_scholes(600.0, 610.0, years, 0.2, "P")[0]
    assert call - put == pytest.approx(600.0 - 610.0 * math.exp(-RATE * years))


def test_universe_has_three_underlyings_and_their_same_day_chains():
    stocks = [i for i in UNIVERSE.instruments.values() if i.sec_type == "STK"]
    assert sorted(i.symbol for i in stocks) == ["IWM", "QQQ", "SPY"]
    assert UNIVERSE.find(ContractQuery(sec_type="STK", exchange="SMART")) == []  # names nothing
    chain = UNIVERSE.find(ContractQuery(symbol="QQQ", sec_type="OPT", expiry="20250117"))
    assert len(chain) == 2 * len(UNIVERSE.strikes["QQQ"]) and all(i.under_con_id == 320227571 for i in chain)
    [put] = UNIVERSE.find(ContractQuery(local_symbol="IWM   250117P00220000"))
    assert (put.strike, put.right, put.multiplier) == (220.0, "P", "100")
    assert UNIVERSE.find(ContractQuery(con_id=756733, symbol="QQQ")) == [SPY]  # conId alone decides
    assert UNIVERSE.find(ContractQuery(symbol="SPY", sec_type="STK", currency="EUR")) == []


def _request(**changes) -> ReqHistoricalData:
    fields = dict(
        req_id=1,
        contract=ContractQuery(con_id=756733),
        end="",
        bar_size="5 mins",
        duration="1 D",
        use_rth=True,
        what_to_show="TRADES",
        format_date=1,
        keep_up_to_date=False,
    )
    return ReqHistoricalData(**(fields | changes))


def test_historical_bars_cover_the_duration_and_end_at_the_end_time():
    spec = history.parse_request(_request(), NOW)
    assert len(spec.times) == 78 and spec.times[-1] == datetime(2025, 1, 17, 12, 0, tzinfo=NEW_YORK)
    daily = history.parse_request(_request(bar_size="1 day", duration="2 W"), NOW)
    assert len(daily.times) == 10 and all(t.weekday() < 5 for t in daily.times)


@pytest.mark.parametrize("end", ["20250110 16:00:00", "20250110 16:00:00 US/Eastern", "20250110-21:00:00"])
def test_end_times_in_every_ib_format(end):
    assert history.parse_end(end, NOW) == datetime(2025, 1, 10, 16, 0, tzinfo=NEW_YORK)


@pytest.mark.parametrize(
    "changes, code",
    [
        ({"bar_size": "7 mins"}, 321),
        ({"duration": "1 X"}, 321),
        ({"end": "yesterday"}, 321),
        ({"end": "20250110 16:00:00 Mars/Olympus"}, 321),
        ({"bar_size": "1 secs", "duration": "1 Y"}, 162),
        ({"keep_up_to_date": True}, 162),
        ({"end": "00010101 00:00:00"}, 321),
        ({"bar_size": "1 day", "duration": "999999999 Y"}, 162),  # refused at once, not walked day by day
        ({"duration": "99999999999999999999 S"}, 321),
    ],
)
def test_bad_historical_requests_get_ib_errors(changes, code):
    with pytest.raises(history.HistoryError) as refused:
        history.parse_request(_request(**changes), NOW)
    assert refused.value.code == code


def test_bars_repeat_and_are_consistent():
    market = Market(UNIVERSE, 5, NOW)
    times = history.parse_request(_request(), NOW).times
    bars = market.bars(SPY, times, 300)
    assert bars == Market(UNIVERSE, 5, NOW).bars(SPY, times, 300)
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars)
    assert bars[-1].close == pytest.approx(market.walk(SPY).price, abs=0.01)
