"""Background traders: two-sided books near the crowd's belief, bounded inventory, deterministic, conserving money."""

from __future__ import annotations

from datetime import UTC, datetime

from libs.common.money import ONE_DOLLAR
from services.sim.liquidity import FUNDS, BackgroundTraders
from services.sim.scenarios import default_world
from services.sim.world import World

NOW = datetime(2026, 11, 22, 20, 30, tzinfo=UTC)


def traded_world(seed: int, steps: int = 500, **kw: object) -> tuple[World, BackgroundTraders]:
    w = default_world(seed, NOW, clock=lambda: NOW)
    traders = BackgroundTraders(w, **kw)  # type: ignore[arg-type]
    traders.step(steps)
    return w, traders


def mid(w: World, ticker: str) -> float:
    yes, no = w.engine.book(ticker, 1)
    return (yes[-1][0] + ONE_DOLLAR - no[-1][0]) / (2 * ONE_DOLLAR)


def test_every_active_market_gets_a_two_sided_book_near_the_crowds_belief() -> None:
    w, traders = traded_world(9)
    active = w.active_markets()
    assert len(active) == 44 and traders.actions == 500
    for t in active:
        yes, no = w.engine.book(t, 1)
        assert yes and no, f"{t} is one-sided"
        assert yes[-1][0] + no[-1][0] < ONE_DOLLAR, f"{t} is crossed"
        assert abs(mid(w, t) - traders.belief(t)) < 0.15, t
    assert len(w.engine.trades()) > 20  # takers traded through


def test_makers_quote_on_the_right_side_of_fair_and_inventory_stays_bounded() -> None:
    w, traders = traded_world(10, steps=1_500)
    for t in w.active_markets():
        fair = traders.fair(t)
        yes, no = w.engine.book(t, 1)
        if 0.03 <= fair <= 0.97:  # away from the 1¢ / 99¢ clamps, only makers rest
            assert yes[-1][0] <= fair * ONE_DOLLAR + 1e-6 and ONE_DOLLAR - no[-1][0] >= fair * ONE_DOLLAR - 1e-6, t
        for u in traders.users:
            assert abs(w.engine.position(u, t)) <= traders.max_inventory


def test_money_is_conserved_and_no_balance_goes_negative() -> None:
    w, traders = traded_world(11, steps=1_000)
    users = traders.users
    positions = [p for u in users for p in w.engine.positions(u)]
    longs = sum(max(p.position, 0) for p in positions)
    assert longs == sum(max(-p.position, 0) for p in positions) > 0
    fees = sum(p.fees_paid for p in positions)
    assert fees > 0
    assert sum(w.engine.cash(u) for u in users) + fees + longs * ONE_DOLLAR // 100 == len(users) * FUNDS
    assert all(w.engine.balance(u) >= 0 for u in users)


def test_the_same_seed_gives_the_same_books_and_another_seed_does_not() -> None:
    def snapshot(seed: int) -> tuple[object, ...]:
        w, _ = traded_world(seed, steps=300)
        return tuple(w.engine.book(t) for t in w.active_markets()), tuple(w.engine.trades())

    assert snapshot(3) == snapshot(3)
    assert snapshot(3) != snapshot(4)


def test_mispricing_shifts_the_crowd_and_keeps_the_book_two_sided() -> None:
    probe = default_world(12, NOW, clock=lambda: NOW)
    target = next(t for t in probe.active_markets() if 0.2 < probe.truth[t] < 0.5)
    w, traders = traded_world(12, steps=1_000, mispricing={target: 0.25})
    yes, no = w.engine.book(target, 1)
    assert yes and no
    assert abs(mid(w, target) - (traders.belief(target) + 0.25)) < 0.04  # mispriced by design
    others = [t for t in w.active_markets() if t != target]
    assert all(abs(mid(w, t) - traders.belief(t)) < 0.15 for t in others)


def test_no_active_markets_means_no_actions() -> None:
    w = World(1, lambda: NOW)
    traders = BackgroundTraders(w)
    assert traders.step(10) == 0 and traders.actions == 0 and w.traders is traders
    assert all(w.engine.balance(u) == FUNDS for u in traders.users)
