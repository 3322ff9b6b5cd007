"""Matching engine semantics that the REST tests do not reach: priority, STP, reduce-only, amend, expiry, money."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from libs.common.matching.engine import MatchingEngine
from libs.common.matching.types import BookDelta, ExchangeError, MarketSpec, OrderRequest
from libs.common.money import ONE_DOLLAR, PriceGrid

T = "KXHIGHNY-26NOV23-B52.5"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FUNDS = 1_000 * ONE_DOLLAR


def engine(fee_type: str = "quadratic") -> tuple[MatchingEngine, list[object], list[datetime]]:
    clock = [NOW]
    ids = (f"id{i}" for i in itertools.count())
    e = MatchingEngine(lambda: clock[0], ids=lambda: next(ids))
    e.add_market(MarketSpec(T, "KXHIGHNY-26NOV23", "KXHIGHNY", PriceGrid.linear_cent(), fee_type=fee_type))
    events: list[object] = []
    e.listen(events.append)
    for u in ("a", "b", "c"):
        e.open_account(u, FUNDS)
    return e, events, clock


def req(side: str, price: int, count: int, **kw: object) -> OrderRequest:
    base: dict[str, object] = dict(ticker=T, book_side=side, price=price, count=count,
                                   time_in_force="good_till_canceled", self_trade_prevention_type="taker_at_cross")
    base.update(kw)
    return OrderRequest(**base)  # type: ignore[arg-type]


def test_price_time_priority_and_trade_at_resting_price() -> None:
    e, _, clock = engine()
    first = e.place("a", req("bid", 4_000, 300)).order
    clock[0] += timedelta(seconds=1)
    second = e.place("b", req("bid", 4_000, 300)).order
    better = e.place("b", req("bid", 4_100, 100)).order
    res = e.place("c", req("ask", 3_900, 350))  # sells YES down to 0.39
    prices = [(f.order_id, f.yes_price, f.count) for f in res.fills if not f.is_taker]
    assert prices == [(better.order_id, 4_100, 100), (first.order_id, 4_000, 250)]
    assert e.queue_position("b", second.order_id) == 50  # behind what is left of the first order
    assert e.book(T) == ([(4_000, 350)], [])


def test_self_trade_prevention_modes() -> None:
    e, _, _ = engine()
    own = e.place("a", req("bid", 5_000, 100)).order
    other = e.place("b", req("bid", 4_900, 100)).order
    res = e.place("a", req("ask", 4_900, 200))  # taker_at_cross: stops at its own bid
    assert res.fills == [] and res.order.status == "canceled"
    assert e.get_order("a", own.order_id).status == "resting"
    res = e.place("a", req("ask", 4_900, 200, self_trade_prevention_type="maker"))
    assert e.get_order("a", own.order_id).status == "canceled"  # the resting maker goes
    assert [f.order_id for f in res.fills if not f.is_taker] == [other.order_id]


def test_reduce_only_caps_and_rejects() -> None:
    e, _, _ = engine()
    with pytest.raises(ExchangeError, match="reduce only"):
        e.place("a", req("ask", 5_000, 100, reduce_only=True))
    e.place("b", req("ask", 5_000, 300))
    e.place("a", req("bid", 5_000, 300))  # a is long 3 YES
    capped = e.place("a", req("ask", 6_000, 1_000, reduce_only=True)).order
    assert capped.initial_count == 300


def test_amend_keeps_priority_only_for_a_pure_decrease() -> None:
    e, _, _ = engine()
    a = e.place("a", req("bid", 4_000, 500)).order
    b = e.place("b", req("bid", 4_000, 500)).order
    e.amend("a", a.order_id, ticker=T, book_side="bid", price=4_000, count=300)
    assert e.queue_position("b", b.order_id) == 300
    e.amend("a", a.order_id, ticker=T, book_side="bid", price=4_000, count=400)  # increase: back of the queue
    assert e.queue_position("a", a.order_id) == 500 and e.queue_position("b", b.order_id) == 0
    with pytest.raises(ExchangeError) as mismatch:
        e.amend("a", a.order_id, ticker=T, book_side="ask", price=4_000, count=400)
    assert mismatch.value.code == "order_side_mismatch"
    e.decrease("b", b.order_id, reduce_by=100)
    assert e.queue_position("a", a.order_id) == 400


def test_expiration_and_collateral_release() -> None:
    e, _, clock = engine()
    o = e.place("a", req("bid", 2_500, 1_000, expiration_time=NOW + timedelta(minutes=1))).order
    held = FUNDS - e.balance("a")
    assert held >= 10 * 2_500  # cost of 10 YES at 0.25, plus a fee allowance
    with pytest.raises(ExchangeError, match="future"):
        e.place("a", req("bid", 2_500, 100, expiration_time=NOW - timedelta(seconds=1)))
    clock[0] += timedelta(minutes=2)
    assert [x.order_id for x in e.expire()] == [o.order_id]
    assert e.balance("a") == FUNDS and e.get_order("a", o.order_id).last_update_reason == "Expired"


def test_netting_and_realized_pnl() -> None:
    e, _, _ = engine()
    e.place("b", req("ask", 4_000, 1_000))
    e.place("a", req("bid", 4_000, 1_000))  # a: +10 YES at 0.40
    e.place("b", req("bid", 6_000, 1_000))
    e.place("a", req("ask", 6_000, 1_000))  # a sells 10 YES at 0.60 (buys NO at 0.40): flat
    [pos] = e.positions("a")
    assert pos.position == 0 and pos.market_exposure == 0
    fees = pos.fees_paid
    assert pos.realized_pnl == 10 * 2_000 - fees
    assert e.balance("a") == FUNDS + 10 * 2_000 - fees


def test_money_is_conserved_under_random_flow() -> None:
    e, events, _ = engine(fee_type="quadratic_with_maker_fees")
    rng = random.Random(5)
    for _ in range(2_000):
        user = rng.choice("abc")
        roll = rng.random()
        try:
            if roll < 0.1:
                resting = e.orders(user, status="resting")
                if resting:
                    e.cancel(user, rng.choice(resting).order_id)
                continue
            e.place(user, req(rng.choice(["bid", "ask"]), rng.randrange(1, 100) * 100, rng.randrange(1, 40) * 50,
                              time_in_force=rng.choice(["good_till_canceled", "immediate_or_cancel", "fill_or_kill"]),
                              self_trade_prevention_type=rng.choice(["taker_at_cross", "maker"])))
        except ExchangeError as err:
            assert err.code in ("available_balance_too_low",)
        yes, no = e.book(T)
        if yes and no:
            assert yes[-1][0] + no[-1][0] < ONE_DOLLAR, "book crossed"
    fees = sum(p.fees_paid for u in "abc" for p in e.positions(u))
    longs = sum(max(p.position, 0) for u in "abc" for p in e.positions(u))
    shorts = sum(max(-p.position, 0) for u in "abc" for p in e.positions(u))
    assert longs == shorts  # every YES has a NO on the other side
    cash = sum(e._accounts[u].cash for u in "abc")  # the raw ledger: conservation needs it
    # Cash paid in = cash out + $1 per open pair held by the exchange + fees (up to per-fill rounding).
    assert 0 <= 3 * FUNDS - cash - fees - longs * ONE_DOLLAR // 100 <= 2 * 2_000
    assert all(e.balance(u) >= 0 for u in "abc")
    deltas = [ev for ev in events if isinstance(ev, BookDelta)]
    level: dict[tuple[str, int], int] = {}
    for d in deltas:
        level[(d.side, d.price)] = level.get((d.side, d.price), 0) + d.delta
    yes, no = e.book(T)
    assert {k: v for k, v in level.items() if v} == {**{("yes", p): c for p, c in yes},
                                                     **{("no", p): c for p, c in no}}
