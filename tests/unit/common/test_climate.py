"""Climate-day arithmetic with hand-computed answers (DST both ways, Chicago after midnight, Phoenix)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

from libs.common.climate import c_to_f, climate_day, climate_day_bounds, member_daily_max


def hours(start: datetime, n: int) -> list[datetime]:
    return [start + timedelta(hours=i) for i in range(n)]


def test_bounds_are_lst_midnights_all_year() -> None:
    # New York: EST (UTC-5) in winter and, for the climate day, in summer too.
    assert climate_day_bounds(date(2026, 1, 15), "America/New_York")[0] == datetime(2026, 1, 15, 5, tzinfo=UTC)
    assert climate_day_bounds(date(2026, 7, 15), "America/New_York")[0] == datetime(2026, 7, 15, 5, tzinfo=UTC)
    # Spring-forward (Mar 8 2026) and fall-back (Nov 1 2026) days are still exactly 24 LST hours.
    for day in (date(2026, 3, 8), date(2026, 11, 1)):
        start, end = climate_day_bounds(day, "America/New_York")
        assert end - start == timedelta(hours=24) and start == datetime(day.year, day.month, day.day, 5, tzinfo=UTC)
    assert climate_day_bounds(date(2026, 7, 15), "America/Phoenix")[0] == datetime(2026, 7, 15, 7, tzinfo=UTC)


def test_half_past_midnight_daylight_time_is_the_previous_climate_day() -> None:
    # 00:30 CDT on Jul 16 = 05:30Z = 23:30 CST on Jul 15.
    assert climate_day(datetime(2026, 7, 16, 5, 30, tzinfo=UTC), "America/Chicago") == date(2026, 7, 15)
    assert climate_day(datetime(2026, 7, 16, 6, 30, tzinfo=UTC), "America/Chicago") == date(2026, 7, 16)
    assert climate_day(datetime(2026, 1, 16, 5, 30, tzinfo=UTC), "America/Chicago") == date(2026, 1, 15)


def test_member_max_on_a_dst_day_uses_the_lst_window() -> None:
    day = date(2026, 3, 8)  # spring forward in New York at 07:00Z
    times = hours(datetime(2026, 3, 8, 0, tzinfo=UTC), 36)  # 00Z Mar 8 .. 11Z Mar 9
    vals = np.full((36, 2), 40.0)
    vals[3, 0] = 70.0   # 03Z = 22:00 EST Mar 7: previous climate day
    vals[20, 0] = 55.0  # 20Z: inside the day
    vals[28, 1] = 61.0  # 04Z Mar 9 = 23:00 EST Mar 8: still Mar 8's climate day
    vals[29, 1] = 90.0  # 05Z Mar 9 = 00:00 EST Mar 9: the next day
    out = member_daily_max(times, vals, "America/New_York", [day])
    assert out[day].tolist() == [55.0, 61.0]


def test_phoenix_and_missing_hours() -> None:
    day = date(2026, 7, 15)
    times = hours(datetime(2026, 7, 15, 7, tzinfo=UTC), 24)
    vals = np.linspace(80, 111, 24)[:, None].repeat(2, axis=1)
    vals[:10, 1] = np.nan  # 14 hours only: too few for a max
    out = member_daily_max(times, vals, "America/Phoenix", [day])
    assert out[day][0] == 111.0 and np.isnan(out[day][1])
    assert round(c_to_f(-40.0), 6) == -40.0 and round(c_to_f(37.0), 6) == 98.6
