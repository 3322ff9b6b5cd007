"""Climate days: the settlement station's day runs midnight to midnight local STANDARD time (data_sources.md B3).

Under daylight time that is 01:00 to 00:59 on the clock, so a 00:30 CDT reading belongs to the previous
climate day. The standard offset is the zone's UTC offset minus its DST amount, taken at the day itself
(zones have changed standard offsets historically).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

MIN_HOURS = 20  # a member's day with fewer hourly values than this has no reliable max


def standard_offset(tz: str | ZoneInfo, day: date) -> timedelta:
    """The zone's standard (non-DST) UTC offset on `day`."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    noon = datetime.combine(day, time(12), zone)
    return (noon.utcoffset() or timedelta()) - (noon.dst() or timedelta())


def climate_day_bounds(day: date, tz: str | ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of a climate day in UTC."""
    off = standard_offset(tz, day)
    start = datetime.combine(day, time(0), UTC) - off
    return start, start + timedelta(days=1)


def climate_day(ts: datetime, tz: str | ZoneInfo) -> date:
    """The climate day a UTC-aware instant belongs to."""
    if ts.tzinfo is None:
        raise ValueError("climate_day needs a timezone-aware timestamp")
    utc = ts.astimezone(UTC)
    # The standard offset of the civil date is right except within a day of an offset change.
    guess = (utc + standard_offset(tz, utc.date())).date()
    for day in (guess, guess - timedelta(days=1), guess + timedelta(days=1)):
        start, end = climate_day_bounds(day, tz)
        if start <= utc < end:
            return day
    return guess  # pragma: no cover - bounds always tile the line


def c_to_f(c: float) -> float:
    """Celsius to Fahrenheit."""
    return c * 9.0 / 5.0 + 32.0


def member_daily_max(times: Sequence[datetime], values: np.ndarray, tz: str | ZoneInfo,
                     days: Sequence[date], *, min_hours: int = MIN_HOURS) -> dict[date, np.ndarray]:
    """Each member's maximum over each climate day.

    `values` is (n_times × n_members), NaN for missing; a member-day with fewer than `min_hours`
    finite hourly values gets NaN (a partial day would understate the max).
    """
    vals = np.asarray(values, dtype=float)
    if vals.ndim == 1:
        vals = vals[:, None]
    stamps = np.array([t.astimezone(UTC).timestamp() for t in times])
    out: dict[date, np.ndarray] = {}
    for day in days:
        start, end = climate_day_bounds(day, tz)
        mask = (stamps >= start.timestamp()) & (stamps < end.timestamp())
        window = vals[mask]
        finite = np.isfinite(window).sum(axis=0)
        with np.errstate(all="ignore"):
            mx = np.where(finite > 0, np.nanmax(np.where(np.isfinite(window), window, -np.inf), axis=0)
                          if window.size else np.nan, np.nan)
        out[day] = np.where(finite >= min_hours, mx, np.nan)
    return out
