"""The scale benchmark's world (services/sim/scale.py): 2,000+ open markets with valid strikes and brackets."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime

from libs.common.families import family_of
from services.sim.scale import ALL_STATIONS, SIM_STATIONS, install_stations, scaled_world

NOW = datetime(2026, 11, 22, 13, 30, tzinfo=UTC)  # 08:30 in New York: before tomorrow's 10 AM listing


def test_scaled_world_lists_2000_open_markets_with_valid_ladders() -> None:
    world = scaled_world(3, NOW, 2000, clock=lambda: NOW)
    active = world.active_markets()
    assert len(active) >= 2000
    events: dict[str, list] = defaultdict(list)
    for t in active:
        events[world.catalog.markets[t].event_ticker].append(world.catalog.markets[t])
    weather = {e: ms for e, ms in events.items() if family_of(ms[0].series_ticker) == "weather"}
    btc = {e: ms for e, ms in events.items() if family_of(ms[0].series_ticker) == "btc"}
    assert len({ms[0].series_ticker for ms in weather.values()}) >= 20
    assert len(weather) >= 40  # two climate days per city, both open now
    for ms in weather.values():
        assert len(ms) == 6
        kinds = sorted(m.strike_type for m in ms)
        assert kinds == ["between"] * 4 + ["greater", "less"]
        low = next(m for m in ms if m.strike_type == "less")
        high = next(m for m in ms if m.strike_type == "greater")
        mids = sorted((m for m in ms if m.strike_type == "between"), key=lambda m: m.floor_strike)
        assert low.cap_strike == mids[0].floor_strike  # T<lo> covers up to lo - 1
        for a, b in itertools.pairwise(mids):
            assert a.cap_strike == a.floor_strike + 1 and b.floor_strike == a.cap_strike + 1
        assert high.floor_strike == mids[-1].cap_strike
        assert sum(world.outcomes[m.ticker] == "yes" for m in ms) == 1
        assert all(0.0 <= world.truth[m.ticker] <= 1.0 for m in ms)
    ladders = [ms for ms in btc.values() if ms[0].series_ticker == "KXBTCD"]
    assert ladders and all(len(ms) >= 100 for ms in ladders)
    for ms in ladders:
        strikes = sorted(m.floor_strike for m in ms)
        assert all(m.strike_type == "greater" and m.cap_strike is None for m in ms)
        assert len(set(strikes)) == len(strikes)
    for ms in btc.values():
        if ms[0].series_ticker == "KXBTC":
            between = [m for m in ms if m.strike_type == "between"]
            assert between and all(m.floor_strike < m.cap_strike for m in between)
            assert sum(world.outcomes[m.ticker] == "yes" for m in ms) == 1
    closes = {ms[0].close_time for ms in btc.values()}
    assert len(closes) >= 2 and all(c > NOW for c in closes)  # hourly closes and the daily one


def test_install_stations_makes_sim_stations_known() -> None:
    from libs.common import stations

    saved = dict(stations.BY_SERIES), dict(stations.BY_ICAO), stations.STATIONS
    try:
        install_stations()
        assert len(ALL_STATIONS) >= 20
        assert len({s.icao for s in ALL_STATIONS}) == len(ALL_STATIONS)
        for st in SIM_STATIONS:
            assert stations.BY_SERIES[st.series] is st
            assert family_of(st.series) == "weather"
    finally:  # other tests in this process see the real table again
        stations.BY_SERIES.clear()
        stations.BY_SERIES.update(saved[0])
        stations.BY_ICAO.clear()
        stations.BY_ICAO.update(saved[1])
        stations.STATIONS = saved[2]
