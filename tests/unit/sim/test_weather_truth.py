"""The sim's honest weather: forecasts that cannot know the outcome, realistic errors, an ideal that is calibrated."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from libs.common.climate import climate_day_bounds
from libs.common.stations import BY_ICAO
from services.sim.liquidity import BackgroundTraders
from services.sim.scenarios import weather_event
from services.sim.weather_truth import MODELS, StationWeather, WeatherTruth, bracket_mass, round_half_up
from services.sim.world import World

NYC = BY_ICAO["KNYC"]
NY = ZoneInfo("America/New_York")
FIRST = date(2026, 11, 1)
DAYS = [FIRST + timedelta(days=k) for k in range(60)]


def day_hours(day: date) -> np.ndarray:
    start, _ = climate_day_bounds(day, NYC.tz)
    return int(start.timestamp()) // 3600 + np.arange(24)


def ensemble_max(w: StationWeather, day: date, now: datetime) -> np.ndarray:
    """Every member's max over the climate day, from the run the fake would serve at `now`."""
    run = w.latest_run(now)
    return np.concatenate([w.members_f(run, m, day_hours(day)).max(axis=1) for m in MODELS])


@pytest.fixture(scope="module")
def nyc() -> StationWeather:
    return WeatherTruth(21).station("KNYC")


def test_forecasts_do_not_leak_the_outcome_and_their_errors_are_realistic(nyc: StationWeather) -> None:
    """Day-ahead (15:00 the day before) the ensemble mean misses the CLI max by about 3 °F (NWS day-1 MAE
    2.5-3 °F), not by the 0.2 °F of a leaking sim; on the day at noon the miss shrinks but stays above 1 °F."""
    ahead, noon, spread = [], [], []
    for day in DAYS:
        cli = nyc.day_max(day)
        before = ensemble_max(nyc, day, datetime.combine(day - timedelta(days=1), time(15), NY).astimezone(UTC))
        ahead.append(abs(float(before.mean()) - cli))
        spread.append(float(before.std()))
        on_day = ensemble_max(nyc, day, datetime.combine(day, time(12), NY).astimezone(UTC))
        noon.append(abs(float(on_day.mean()) - cli))
    assert 1.8 < statistics.fmean(ahead) < 4.0
    assert 0.8 < statistics.fmean(noon) < statistics.fmean(ahead)
    # Under-dispersive, as real ensembles are: the spread is smaller than the typical error.
    assert statistics.fmean(spread) < statistics.fmean(ahead) * 1.25


def test_observations_follow_the_truth_and_the_cli_max_is_at_least_every_metar(nyc: StationWeather) -> None:
    above = 0
    for day in DAYS[:20]:
        metars = [nyc.metar_f(int(h)) for h in day_hours(day)]
        assert all(float(m).is_integer() for m in metars)  # whole °F, as ASOS reports
        cli = nyc.day_max(day)
        assert cli >= max(metars)
        above += cli > max(metars)
    assert 0 < above < 20  # the 5-minute peak sometimes falls between reports, not always


def test_the_peak_time_varies_by_day(nyc: StationWeather) -> None:
    peaks = {round(nyc.shape(d).peak_h) for d in DAYS}
    assert len(peaks) >= 3 and all(12 <= p <= 18 for p in peaks)


def test_the_served_forecast_does_not_jump_at_listing(nyc: StationWeather) -> None:
    """Before the fix the fake served the next day from an unrelated max until 10:00 local the day before."""
    day = DAYS[5]
    listing = datetime.combine(day - timedelta(days=1), time(10), NY).astimezone(UTC)
    before = ensemble_max(nyc, day, listing - timedelta(minutes=5)).mean()
    after = ensemble_max(nyc, day, listing + timedelta(minutes=5)).mean()
    assert abs(before - after) < 1.0


def test_pinning_a_max_shifts_the_forecast_with_it() -> None:
    w = WeatherTruth(4, {("KNYC", date(2026, 11, 22)): 58.0})
    st = w.station("KNYC")
    assert st.day_max(date(2026, 11, 22)) == 58
    members = ensemble_max(st, date(2026, 11, 22), datetime(2026, 11, 21, 20, tzinfo=UTC))
    assert abs(float(members.mean()) - 58) < 8 and float(members.std()) > 0.5


def test_the_ideal_is_calibrated_and_sharpens_through_the_day(nyc: StationWeather) -> None:
    """Over 60 days, the ideal's P(max >= its median) matches how often that happened, and its spread shrinks from
    the day before to the evening, ending on the CLI value once the day is over."""
    hits, probs, sds = [], [], {"ahead": [], "evening": []}
    for day in DAYS:
        cli = nyc.day_max(day)
        for label, now in (("ahead", datetime.combine(day - timedelta(days=1), time(15), NY)),
                           ("evening", datetime.combine(day, time(20), NY))):
            pmf = nyc.ideal_pmf(day, now.astimezone(UTC), n=1500)
            mu = sum(k * p for k, p in pmf.items())
            sds[label].append(math.sqrt(sum((k - mu) ** 2 * p for k, p in pmf.items())))
            if label == "ahead":
                cut = round(mu)
                probs.append(bracket_mass(pmf, cut, math.inf))
                hits.append(1 if cli >= cut else 0)
        end = datetime.combine(day + timedelta(days=1), time(0, 30), NY).astimezone(UTC)
        assert nyc.ideal_pmf(day, end) == {cli: 1.0}
    assert abs(statistics.fmean(probs) - statistics.fmean(hits)) < 0.15
    assert statistics.fmean(sds["ahead"]) > 2.0 > 1.0 > statistics.fmean(sds["evening"])
    # A realistic ideal forecast: day-ahead Brier of "max >= median" is far from the leak's ~0.001.
    assert statistics.fmean((p - h) ** 2 for p, h in zip(probs, hits, strict=True)) > 0.1


def test_honest_events_settle_on_the_cli_max_and_the_crowd_learns() -> None:
    """Each honest event settles on the station's CLI max; the crowd's Brier falls from listing to the evening."""
    early, late = [], []
    shared = WeatherTruth(8)
    for k in range(24):
        day = FIRST + timedelta(days=k)
        listing = datetime.combine(day - timedelta(days=1), time(10), NY).astimezone(UTC)
        clock = [listing]
        world = World(8, lambda clock=clock: clock[0])
        world.weather = shared
        event = weather_event(world, day=day)
        assert world.facts[event]["true_max_f"] == shared.day_max("KNYC", day)
        traders = BackgroundTraders(world)
        tickers = [m.ticker for m in world.catalog.markets_of(event)]
        for bucket, at in ((early, listing + timedelta(hours=1)),
                           (late, datetime.combine(day, time(20), NY).astimezone(UTC))):
            clock[0] = at
            world.advance(at)
            for t in tickers:
                bucket.append((traders.belief(t) - (1.0 if world.outcomes[t] == "yes" else 0.0)) ** 2)
    assert statistics.fmean(late) < 0.6 * statistics.fmean(early)


def test_ideal_is_what_the_desk_could_know_not_the_5_minute_trace(nyc: StationWeather) -> None:
    """Late in the day the ideal hedges between the largest METAR and one more (the desk sees METARs only)."""
    hedged = 0
    for day in DAYS[:30]:
        top = max(nyc.metar_f(int(h)) for h in day_hours(day)[:22])
        pmf = nyc.ideal_pmf(day, datetime.combine(day, time(22), NY).astimezone(UTC), n=1500)
        assert sum(p for k, p in pmf.items() if k < top) == 0  # never below what was reported
        hedged += 0.05 < pmf.get(int(top), 0.0) < 0.95
    assert hedged >= 3


def test_round_half_up_is_the_cli_rounding() -> None:
    assert list(round_half_up(np.array([64.5, 64.49, -0.5, 71.96]))) == [65.0, 64.0, 0.0, 72.0]
