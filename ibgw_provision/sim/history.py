"""reqHistoricalData arguments as IB spells them: duration, bar size, end time; and bar date formats."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..tws.codes import Code
from .market import NEW_YORK, TIME_ZONE, Bar
from .requests import ReqHistoricalData

UTC = timezone.utc  # datetime.UTC is Python 3.11+; hosts may run 3.10 (Ubuntu 22.04)

DAY = 86400
MAX_BARS = 10_000
EARLIEST_YEAR = 1900
RTH_SECONDS, EXTENDED_SECONDS = 23_400, 57_600  # 09:30-16:00 and 04:00-20:00
BAR_SIZES = {
    "1 secs": 1,
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
    "1 day": DAY,
}
TRADING_DAYS = {"D": 1, "W": 5, "M": 21, "Y": 252}
_DURATION = re.compile(r"(\d{1,9}) ([SDWMY])")
_END = re.compile(r"(\d{8})[ -](\d\d:\d\d:\d\d)(?: (\S+))?")


class HistoryError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _invalid(cause: str) -> HistoryError:
    return HistoryError(Code.REQUEST_VALIDATION_ERROR, f"Error validating request.-'bP' : cause - {cause}")


@dataclass(frozen=True)
class BarSpec:
    times: list[datetime]  # bar start times, ascending
    bar_seconds: int
    end: datetime

    @property
    def start(self) -> datetime:
        return self.times[0]


def parse_end(text: str, now: datetime) -> datetime:
    """'' (now), 'YYYYMMDD HH:MM:SS [zone]' (New York if no zone) or 'YYYYMMDD-HH:MM:SS' (UTC)."""
    if not text.strip():
        return now
    match = _END.fullmatch(text.strip())
    if not match:
        raise _invalid(f"End date/time: invalid format {text!r}")
    try:
        zone = UTC if "-" in text else ZoneInfo(match[3]) if match[3] else NEW_YORK
        end = (
            datetime.strptime(match[1] + match[2], "%Y%m%d%H:%M:%S").replace(tzinfo=zone).astimezone(NEW_YORK)
        )
    except (ValueError, OverflowError, ZoneInfoNotFoundError):
        end = None
    if end is None or end.year < EARLIEST_YEAR:  # bars reach back up to MAX_BARS days from the end
        raise _invalid(f"End date/time: invalid format {text!r}")
    return end


def _duration_seconds(duration: str, use_rth: bool) -> int:
    match = _DURATION.fullmatch(duration.strip())
    if not match or int(match[1]) <= 0:
        raise _invalid(f"Historical data query duration format is invalid: {duration!r}")
    count, unit = int(match[1]), match[2]
    return (
        count if unit == "S" else count * TRADING_DAYS[unit] * (RTH_SECONDS if use_rth else EXTENDED_SECONDS)
    )


def _daily_times(end: datetime, days: int) -> list[datetime]:
    times: list[datetime] = []
    day = end.replace(hour=0, minute=0, second=0, microsecond=0)
    while len(times) < days:
        if day.weekday() < 5:
            times.append(day)
        day -= timedelta(days=1)
    return times[::-1]


def parse_request(req: ReqHistoricalData, now: datetime) -> BarSpec:
    if req.keep_up_to_date:
        raise HistoryError(
            Code.HISTORICAL_DATA_ERROR,
            "Historical Market Data Service error message:keepUpToDate is not supported by ibgw sim",
        )
    bar_seconds = BAR_SIZES.get(" ".join(req.bar_size.split()))
    if bar_seconds is None:
        raise _invalid("Historical data bar size setting is invalid.")
    seconds, end = _duration_seconds(req.duration, req.use_rth), parse_end(req.end, now)
    daily = bar_seconds >= DAY
    count = (
        math.ceil(seconds / (RTH_SECONDS if req.use_rth else EXTENDED_SECONDS))
        if daily
        else seconds // bar_seconds
    )
    if count > MAX_BARS:  # also keeps one request from stalling the gateway
        raise HistoryError(
            Code.HISTORICAL_DATA_ERROR, "Historical Market Data Service error message:Time length exceed max."
        )
    if daily:
        return BarSpec(_daily_times(end, count), bar_seconds, end)
    if count == 0:
        raise _invalid("Historical data query duration is shorter than the bar size.")
    last = datetime.fromtimestamp(end.timestamp() // bar_seconds * bar_seconds, NEW_YORK)
    return BarSpec(
        [last - timedelta(seconds=bar_seconds * k) for k in range(count - 1, -1, -1)], bar_seconds, end
    )


def bar_date(bar: Bar, bar_seconds: int, format_date: int) -> str:
    """A bar's date as IB formats it: YYYYMMDD for daily bars, else New York time or epoch seconds."""
    if bar_seconds >= DAY:
        return bar.time.strftime("%Y%m%d")
    if format_date == 2:
        return str(int(bar.time.timestamp()))
    return bar.time.strftime(f"%Y%m%d %H:%M:%S {TIME_ZONE}")


def range_text(moment: datetime) -> str:
    return moment.strftime(f"%Y%m%d %H:%M:%S {TIME_ZONE}")
