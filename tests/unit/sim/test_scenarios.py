"""Scenario worlds: Kalshi-shaped events, truths that add up, seeded outcomes, liquidity around the truth."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.sim.liquidity import BackgroundTraders
from services.sim.scenarios import btc_ladder, btc_price_at, default_world, weather_event
from services.sim.world import World

NOW = datetime(2026, 11, 22, 20, 30, tzinfo=UTC)


def fixed_world(seed: int) -> World:
    return World(seed, lambda: NOW)


def test_weather_event_has_kalshis_six_market_shape() -> None:
    w = fixed_world(3)
    event = weather_event(w, day=date(2026, 11, 23), true_mean_f=55.0)
    markets = w.catalog.markets_of(event)
    assert event == "KXHIGHNY-26NOV23"
    assert [m.strike_type for m in markets] == ["less", "between", "between", "between", "between", "greater"]
    low, b1, *_, high = markets
    assert low.ticker.endswith(f"-T{low.cap_strike}") and low.yes_sub_title == f"{int(low.cap_strike) - 1}° or below"
    assert b1.cap_strike - b1.floor_strike == 1 and b1.ticker.endswith(f"-B{b1.floor_strike}.5")
    assert high.floor_strike == low.cap_strike + 7 and high.yes_sub_title == f"{int(high.floor_strike) + 1}° or above"
    assert all(m.close_time == datetime(2026, 11, 24, 5, tzinfo=UTC) for m in markets)  # midnight EST
    assert abs(sum(w.truth[m.ticker] for m in markets) - 1) < 1e-9
    assert [w.outcomes[m.ticker] for m in markets].count("yes") == 1
    chi = weather_event(w, series="KXHIGHCHI", city="Chicago", station="KMDW", tz="America/Chicago",
                        day=date(2026, 11, 23))
    assert w.catalog.markets_of(chi)[0].close_time == datetime(2026, 11, 24, 6, tzinfo=UTC)


def test_outcomes_are_deterministic_per_seed() -> None:
    def outcome(seed: int) -> tuple[float, ...]:
        w = fixed_world(seed)
        events = [weather_event(w, day=date(2026, 11, 23) + timedelta(days=i)) for i in range(5)]
        return tuple(w.facts[e]["true_max_f"] for e in events)

    assert outcome(1) == outcome(1)
    assert outcome(1) != outcome(2)


def test_btc_ladder_is_monotone_and_path_ends_at_settlement() -> None:
    w = fixed_world(4)
    close = NOW + timedelta(minutes=30)
    event = btc_ladder(w, close=close, spot=90_000.0)
    markets = w.catalog.markets_of(event)
    assert event == "KXBTCD-26NOV2216" and markets[0].ticker.endswith("99.99")
    truths = [w.truth[m.ticker] for m in markets]
    assert truths == sorted(truths, reverse=True) and truths[0] > 0.99 and truths[-1] < 0.01
    facts = w.facts[f"btc:{close.isoformat()}"]
    assert abs(btc_price_at(w, close) - float(facts["settle_price"])) < 1e-6
    assert abs(btc_price_at(w, close - timedelta(hours=1)) - 90_000.0) < 1e-6
    for m in markets:
        assert (w.outcomes[m.ticker] == "yes") == (float(facts["settle_price"]) > float(m.floor_strike))


def test_background_traders_make_two_sided_books_near_the_truth() -> None:
    w = default_world(9, NOW, clock=lambda: NOW)
    traders = BackgroundTraders(w)
    traders.step(800)
    active = w.active_markets()
    assert active
    quoted = 0
    for t in active:
        yes, no = w.engine.book(t, 1)
        if yes and no:
            quoted += 1
            mid = (yes[-1][0] + 10_000 - no[-1][0]) / 20_000
            assert abs(mid - w.truth[t]) < 0.15, t
            assert yes[-1][0] + no[-1][0] < 10_000
    assert quoted >= 0.8 * len(active)


def test_world_advance_opens_closes_and_settles() -> None:
    clock = [NOW - timedelta(days=1)]
    w = World(5, lambda: clock[0])
    event = weather_event(w, day=date(2026, 11, 23))
    tickers = [m.ticker for m in w.catalog.markets_of(event)]
    assert {w.engine.market(t).status for t in tickers} == {"initialized"}
    for when, status in ((datetime(2026, 11, 22, 15, tzinfo=UTC), "active"),
                         (datetime(2026, 11, 24, 5, tzinfo=UTC), "closed"),
                         (datetime(2026, 11, 24, 19, tzinfo=UTC), "finalized")):
        clock[0] = when
        w.advance(when)
        assert {w.engine.market(t).status for t in tickers} == {status}
    assert sorted(w.engine.market(t).result for t in tickers).count("yes") == 1
