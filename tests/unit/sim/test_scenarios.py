"""Scenario worlds: Kalshi-shaped events, truths that add up, seeded outcomes, a world that runs the lifecycle."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from statistics import NormalDist

import pytest

from libs.common.matching.types import BookSide, OrderRequest
from libs.common.money import ONE_DOLLAR, PriceGrid
from services.sim.catalog import MarketInfo
from services.sim.liquidity import BackgroundTraders
from services.sim.scenarios import btc_ladder, btc_price_at, btc_range, default_world, weather_event
from services.sim.world import World

NOW = datetime(2026, 11, 22, 20, 30, tzinfo=UTC)  # 15:30 EST
DAY = date(2026, 11, 23)


def fixed_world(seed: int, now: datetime = NOW) -> World:
    return World(seed, lambda: now)


def one_contract(ticker: str, side: BookSide, price: int) -> OrderRequest:
    return OrderRequest(ticker=ticker, book_side=side, price=price, count=100, time_in_force="good_till_canceled",
                        self_trade_prevention_type="taker_at_cross")


def wins(m: MarketInfo, value: float) -> bool:
    """Kalshi's strike semantics (kalshi_api.md §8)."""
    if m.strike_type == "less":
        return value < float(m.cap_strike)  # type: ignore[arg-type]
    if m.strike_type == "greater":
        return value > float(m.floor_strike)  # type: ignore[arg-type]
    return float(m.floor_strike) <= value <= float(m.cap_strike)  # type: ignore[arg-type]


def test_weather_event_has_kalshis_six_market_shape() -> None:
    w = fixed_world(3)
    event = weather_event(w, day=DAY, true_max_f=55.0)
    markets = w.catalog.markets_of(event)
    assert event == "KXHIGHNY-26NOV23" and len(markets) == 6
    assert [m.strike_type for m in markets] == ["less", "between", "between", "between", "between", "greater"]
    low, *brackets, high = markets
    lo = int(low.cap_strike)  # type: ignore[arg-type]
    assert low.ticker == f"{event}-T{lo}" and low.floor_strike is None and low.yes_sub_title == f"{lo - 1}° or below"
    for k, b in enumerate(brackets):
        a = lo + 2 * k
        assert b.ticker == f"{event}-B{a}.5"
        assert (b.floor_strike, b.cap_strike, b.yes_sub_title) == (Decimal(a), Decimal(a + 1), f"{a}° to {a + 1}°")
    assert high.ticker == f"{event}-T{lo + 7}" and high.floor_strike == lo + 7 and high.cap_strike is None
    assert high.yes_sub_title == f"{lo + 8}° or above"
    assert abs((lo + 3.5) - 55.0) <= 6  # centred near the true max
    for m in markets:
        assert m.close_time == datetime(2026, 11, 24, 5, tzinfo=UTC)  # midnight EST after the climate day
        assert m.open_time == datetime(2026, 11, 22, 15, tzinfo=UTC)  # 10 AM EST the day before
        assert m.expected_expiration_time == datetime(2026, 11, 24, 19, tzinfo=UTC)
        assert m.grid == PriceGrid.linear_cent()
    s = w.catalog.series["KXHIGHNY"]
    assert (s.fee_type, s.fee_multiplier, s.category, s.frequency) == ("quadratic", 1, "Climate and Weather", "daily")
    assert s.settlement_sources and "CLINYC" in low.rules_primary
    assert w.engine.market(low.ticker).status == "active"


def test_close_is_the_end_of_the_climate_day_in_local_standard_time() -> None:
    w = fixed_world(3)
    chi = weather_event(w, series="KXHIGHCHI", city="Chicago", station="KMDW", tz="America/Chicago", day=DAY)
    assert chi == "KXHIGHCHI-26NOV23"
    assert {m.close_time for m in w.catalog.markets_of(chi)} == {datetime(2026, 11, 24, 6, tzinfo=UTC)}
    summer = weather_event(w, day=date(2026, 7, 4))  # under EDT the close is still midnight EST
    [info] = {(m.open_time, m.close_time) for m in w.catalog.markets_of(summer)}
    assert info == (datetime(2026, 7, 3, 14, tzinfo=UTC), datetime(2026, 7, 5, 5, tzinfo=UTC))


@pytest.mark.parametrize("seed", range(6))
def test_bracket_truths_are_the_rounded_normal_and_sum_to_one(seed: int) -> None:
    w = fixed_world(seed)
    event = weather_event(w, day=DAY, true_max_f=48.3, spread_f=3.0)
    markets = w.catalog.markets_of(event)
    truths = [w.truth[m.ticker] for m in markets]
    assert abs(sum(truths) - 1) < 1e-9
    dist = NormalDist(48.3, 3.0)
    b = markets[2]  # P(floor <= max rounded to whole degrees <= cap)
    expected = dist.cdf(float(b.cap_strike) + 0.5) - dist.cdf(float(b.floor_strike) - 0.5)  # type: ignore[arg-type]
    assert abs(w.truth[b.ticker] - expected) < 1e-9
    drawn = w.facts[event]["true_max_f"]
    assert drawn == round(drawn)  # whole °F, as reported
    assert [w.outcomes[m.ticker] for m in markets].count("yes") == 1
    for m in markets:
        assert (w.outcomes[m.ticker] == "yes") == wins(m, drawn)
    assert w.facts[event]["winner"] == next(m.ticker for m in markets if w.outcomes[m.ticker] == "yes")


def test_outcomes_are_deterministic_per_seed_and_independent_of_trading() -> None:
    def maxima(seed: int, trade_first: bool = False) -> tuple[float, ...]:
        w = fixed_world(seed)
        if trade_first:  # consume the world's shared random stream before listing
            btc_ladder(w, close=NOW + timedelta(minutes=30), spot=90_000.0)
            BackgroundTraders(w).step(200)
        events = [weather_event(w, day=DAY + timedelta(days=i)) for i in range(5)]
        return tuple(w.facts[e]["true_max_f"] for e in events)

    assert maxima(1) == maxima(1) == maxima(1, trade_first=True)
    assert maxima(1) != maxima(2)


def test_true_mean_f_is_the_old_name_of_true_max_f() -> None:
    a, b = fixed_world(7), fixed_world(7)
    ea, eb = weather_event(a, day=DAY, true_max_f=61.0), weather_event(b, day=DAY, true_mean_f=61.0)
    assert a.facts[ea] == b.facts[eb] and a.truth == b.truth
    with pytest.raises(ValueError):
        weather_event(fixed_world(7), day=DAY, true_max_f=61.0, true_mean_f=60.0)


def test_btc_ladder_is_shaped_like_kxbtcd_and_monotone_in_the_strike() -> None:
    w = fixed_world(4)
    close = NOW + timedelta(minutes=30)  # 21:00Z = 4 PM EST
    event = btc_ladder(w, close=close, spot=90_000.0, n_strikes=20, step=500)
    markets = w.catalog.markets_of(event)
    assert event == "KXBTCD-26NOV2216" and len(markets) == 20
    assert markets[0].ticker == f"{event}-T84999.99" and markets[-1].ticker == f"{event}-T94499.99"
    for m in markets:
        assert m.strike_type == "greater" and m.ticker.endswith(f"-T{m.floor_strike}") and m.cap_strike is None
        assert m.close_time == close and w.engine.market(m.ticker).status == "active"
    truths = [w.truth[m.ticker] for m in markets]
    assert all(x >= y for x, y in pairwise(truths))
    assert all(x > y for x, y in pairwise(truths) if 1e-9 < y and x < 1 - 1e-9)  # strictly, away from 0 and 1
    assert truths[0] > 0.99 and truths[-1] < 0.01
    # Listed half an hour into its hour: the truth is the ideal given the path so far, near 1/2 at the money.
    here = btc_price_at(w, NOW)
    at_money = min(markets, key=lambda m: abs(float(m.floor_strike or 0) - here))
    assert 0.2 < w.truth[at_money.ticker] < 0.8
    facts = w.facts[f"btc:{close.isoformat()}"]
    assert w.facts[event]["settle_price"] == facts["settle_price"]
    for m in markets:
        assert (w.outcomes[m.ticker] == "yes") == wins(m, float(facts["settle_price"]))
    # Settlement is the average of the sixty one-second prints before the close, not the close's price.
    prints = [btc_price_at(w, close - timedelta(seconds=s)) for s in range(60)]
    assert abs(float(facts["settle_price"]) - sum(prints) / 60) < 0.006
    assert abs(btc_price_at(w, close - timedelta(hours=1)) - 90_000.0) < 1e-6


def test_btc_range_has_250_dollar_brackets_and_two_tails() -> None:
    w = fixed_world(4)
    close = NOW + timedelta(minutes=30)
    event = btc_range(w, close=close, spot=90_100.0, n_brackets=10, width=250)
    low, *brackets, high = w.catalog.markets_of(event)
    assert event == "KXBTC-26NOV2216" and len(brackets) == 10
    assert (low.strike_type, low.cap_strike, low.ticker) == ("less", Decimal(88_750), f"{event}-T88749.99")
    first = brackets[0]
    assert (first.strike_type, first.floor_strike, first.cap_strike, first.ticker) == (
        "between", Decimal(88_750), Decimal("88999.99"), f"{event}-B88875")
    assert (high.strike_type, high.floor_strike, high.ticker) == ("greater", Decimal("91249.99"), f"{event}-T91249.99")
    markets = [low, *brackets, high]
    assert abs(sum(w.truth[m.ticker] for m in markets) - 1) < 1e-9
    assert [w.outcomes[m.ticker] for m in markets].count("yes") == 1
    settle = float(w.facts[event]["settle_price"])
    assert all((w.outcomes[m.ticker] == "yes") == wins(m, settle) for m in markets)


def test_default_world_lists_the_newest_open_events_all_active() -> None:
    w = default_world(9, NOW, clock=lambda: NOW)
    assert set(w.catalog.events) == {"KXHIGHNY-26NOV23", "KXHIGHCHI-26NOV23", "KXBTCD-26NOV2216", "KXBTC-26NOV2216"}
    assert w.catalog.series["KXHIGHCHI"].title.startswith("Highest temperature in Chicago")
    assert "CLIMDW" in w.catalog.markets_of("KXHIGHCHI-26NOV23")[0].rules_primary
    assert len(w.active_markets()) == len(w.catalog.markets) == 6 + 6 + 20 + 12
    early = datetime(2026, 11, 22, 12, tzinfo=UTC)  # 7 AM EST: tomorrow's event has not opened yet
    w2 = default_world(9, early, clock=lambda: early)
    assert {e for e in w2.catalog.events if e.startswith("KXHIGH")} == {"KXHIGHNY-26NOV22", "KXHIGHCHI-26NOV22"}
    assert len(w2.active_markets()) == len(w2.catalog.markets)


def test_world_advance_opens_closes_and_settles_on_the_clock() -> None:
    clock = [NOW - timedelta(days=1)]
    w = World(5, lambda: clock[0])
    event = weather_event(w, day=DAY)
    tickers = [m.ticker for m in w.catalog.markets_of(event)]
    assert {w.engine.market(t).status for t in tickers} == {"initialized"}
    winner = w.facts[event]["winner"]
    for when, status in ((datetime(2026, 11, 22, 15, tzinfo=UTC), "active"),
                         (datetime(2026, 11, 24, 5, tzinfo=UTC), "closed"),
                         (datetime(2026, 11, 24, 18, 59, tzinfo=UTC), "closed")):
        clock[0] = when
        w.advance(when)
        assert {w.engine.market(t).status for t in tickers} == {status}
        if status == "active":
            assert w.active_markets() == tickers
            w.open_account("alice", 100 * ONE_DOLLAR)
            w.open_account("bob", 100 * ONE_DOLLAR)
            w.engine.place("bob", one_contract(winner, "ask", 4_000))
            w.engine.place("alice", one_contract(winner, "bid", 4_000))  # alice: 1 YES of the winner at 0.40
    clock[0] = datetime(2026, 11, 24, 19, tzinfo=UTC)
    assert sorted(w.settle_due()) == sorted(tickers)
    assert {w.engine.market(t).status for t in tickers} == {"finalized"}
    assert [w.engine.market(t).result for t in tickers].count("yes") == 1 and w.engine.market(winner).result == "yes"
    [row] = w.engine.settlements("alice")
    assert row.revenue == ONE_DOLLAR and w.settle_due() == [] and w.active_markets() == []



def test_settled_markets_report_the_underlying_value_they_settled_on() -> None:
    now = [datetime(2026, 11, 22, 20, tzinfo=UTC)]
    world = World(5, lambda: now[0])
    wx = weather_event(world, day=date(2026, 11, 23))
    btc = btc_ladder(world, close=datetime(2026, 11, 23, 22, tzinfo=UTC), spot=90_000.0, n_strikes=4)
    now[0] = datetime(2026, 11, 25, tzinfo=UTC)  # past both expirations
    world.advance()
    for event in (wx, btc):
        for m in world.catalog.markets_of(event):
            assert world.engine.market(m.ticker).status == "finalized"
    assert {m.expiration_value for m in world.catalog.markets_of(wx)} == {str(world.facts[wx]["true_max_f"])}
    assert {m.expiration_value for m in world.catalog.markets_of(btc)} == {f"{world.facts[btc]['settle_price']:.2f}"}
