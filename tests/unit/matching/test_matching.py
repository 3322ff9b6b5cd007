"""Matching: crossing at the resting price both ways, price-time priority, time in force, post-only, STP, events."""

from __future__ import annotations

import pytest

from libs.common.matching.types import (
    BookDelta,
    ExchangeError,
    Fill,
    MarketStatusChange,
    OrderUpdate,
    PositionUpdate,
    Trade,
)
from tests.unit.matching.kit import T, make_rig


def test_an_ask_crossing_a_resting_yes_bid_trades_at_the_bid() -> None:
    rig = make_rig()
    maker = rig.place("a", "bid", 4_000, 500).order
    assert rig.engine.book(T) == ([(4_000, 500)], [])
    res = rig.place("b", "ask", 3_500, 300)  # would sell down to 0.35; gets the resting 0.40
    assert res.order.status == "executed" and res.order.fill_count == 300
    taker_fill, maker_fill = res.fills
    assert (taker_fill.yes_price, taker_fill.count, taker_fill.is_taker, taker_fill.outcome_side) == (4_000, 300,
                                                                                                      True, "no")
    assert (maker_fill.order_id, maker_fill.is_taker, maker_fill.outcome_side) == (maker.order_id, False, "yes")
    [trade] = rig.engine.trades(T)
    assert (trade.yes_price, trade.count, trade.taker_book_side, trade.taker_outcome_side) == (4_000, 300, "ask", "no")
    assert rig.engine.book(T) == ([(4_000, 200)], [])
    assert rig.engine.position("a", T) == 300 and rig.engine.position("b", T) == -300


def test_a_bid_crossing_a_resting_ask_trades_at_the_ask() -> None:
    rig = make_rig()
    rig.place("b", "ask", 6_000, 500)  # rests as a NO bid at 0.40
    assert rig.engine.book(T) == ([], [(4_000, 500)])
    res = rig.place("a", "bid", 6_500, 200)
    assert [(f.user_id, f.yes_price, f.is_taker, f.outcome_side) for f in res.fills] == [
        ("a", 6_000, True, "yes"), ("b", 6_000, False, "no")]
    assert rig.engine.book(T) == ([], [(4_000, 300)])
    assert rig.engine.get_order("a", res.order.order_id).taker_fill_cost == 2 * 6_000
    assert rig.engine.fills("b")[0].post_position == -200


def test_price_time_priority_across_two_makers() -> None:
    rig = make_rig()
    first = rig.place("a", "bid", 4_000, 300).order
    rig.tick()
    second = rig.place("b", "bid", 4_000, 300).order
    better = rig.place("b", "bid", 4_100, 100).order
    res = rig.place("c", "ask", 3_900, 350)  # sweeps 0.41 first, then the older 0.40
    makers = [(f.order_id, f.yes_price, f.count) for f in res.fills if not f.is_taker]
    assert makers == [(better.order_id, 4_100, 100), (first.order_id, 4_000, 250)]
    assert rig.engine.queue_position("a", first.order_id) == 0
    assert rig.engine.queue_position("b", second.order_id) == 50  # behind what is left of the first
    assert rig.engine.book(T) == ([(4_000, 350)], [])


def test_partial_fill_rests_the_remainder() -> None:
    rig = make_rig()
    rig.place("a", "ask", 5_500, 200)
    res = rig.place("b", "bid", 5_500, 500)
    o = res.order
    assert (o.status, o.fill_count, o.remaining_count, o.initial_count) == ("resting", 200, 300, 500)
    assert rig.engine.book(T) == ([(5_500, 300)], [])
    assert [x.order_id for x in rig.engine.orders("b", status="resting")] == [o.order_id]


def test_fill_or_kill_fills_completely_or_not_at_all() -> None:
    rig = make_rig()
    rig.place("a", "ask", 6_000, 300)
    rig.place("b", "ask", 6_100, 200)
    fail = rig.place("c", "bid", 6_100, 600, time_in_force="fill_or_kill")
    assert (fail.order.status, fail.order.fill_count, fail.order.remaining_count, fail.fills) == ("canceled", 0, 0, [])
    assert rig.of(Trade) == [] and rig.engine.book(T) == ([], [(3_900, 200), (4_000, 300)])
    ok = rig.place("c", "bid", 6_100, 500, time_in_force="fill_or_kill")
    assert (ok.order.status, ok.order.fill_count) == ("executed", 500)
    assert [f.yes_price for f in ok.fills if f.is_taker] == [6_000, 6_100]
    assert rig.engine.book(T) == ([], [])


def test_immediate_or_cancel_cancels_the_remainder() -> None:
    rig = make_rig()
    rig.place("a", "bid", 4_500, 300)
    res = rig.place("b", "ask", 4_500, 500, time_in_force="immediate_or_cancel")
    assert (res.order.status, res.order.fill_count, res.order.remaining_count) == ("canceled", 300, 0)
    assert rig.engine.book(T) == ([], [])  # nothing of the IOC rests
    assert rig.engine.balance("b") == rig.engine.cash("b")  # and it holds no collateral


def test_post_only_that_would_cross_is_rejected_and_nothing_rests() -> None:
    rig = make_rig()
    rig.place("a", "ask", 6_000, 300)  # best YES ask 0.60
    with pytest.raises(ExchangeError) as cross:
        rig.place("b", "bid", 6_000, 100, post_only=True)
    assert (cross.value.code, cross.value.status, cross.value.details) == ("invalid_order", 400, "post only cross")
    assert rig.engine.orders("b") == [] and rig.engine.book(T) == ([], [(4_000, 300)])
    rests = rig.place("b", "bid", 5_900, 100, post_only=True).order
    assert rests.status == "resting" and rig.engine.book(T) == ([(5_900, 100)], [(4_000, 300)])


def test_self_trade_prevention_taker_at_cross_cancels_the_taker_and_keeps_prior_fills() -> None:
    rig = make_rig()
    rig.place("b", "bid", 5_100, 100)
    own = rig.place("a", "bid", 5_000, 100).order
    rig.place("b", "bid", 4_900, 100)
    res = rig.place("a", "ask", 4_900, 300)  # fills b's 0.51, then meets its own 0.50
    o = res.order
    assert (o.status, o.fill_count, o.remaining_count, o.last_update_reason) == ("canceled", 100, 0,
                                                                                 "SelfTradePrevention")
    assert [f.yes_price for f in res.fills if f.is_taker] == [5_100]
    assert rig.engine.get_order("a", own.order_id).status == "resting"
    assert rig.engine.book(T) == ([(4_900, 100), (5_000, 100)], [])


def test_self_trade_prevention_maker_cancels_the_resting_order_and_keeps_matching() -> None:
    rig = make_rig()
    own = rig.place("a", "bid", 5_000, 100).order
    other = rig.place("b", "bid", 4_900, 100).order
    res = rig.place("a", "ask", 4_900, 200, self_trade_prevention_type="maker")
    gone = rig.engine.get_order("a", own.order_id)
    assert (gone.status, gone.last_update_reason) == ("canceled", "SelfTradePrevention")
    assert [f.order_id for f in res.fills if not f.is_taker] == [other.order_id]
    assert (res.order.status, res.order.fill_count, res.order.remaining_count) == ("resting", 100, 100)
    assert rig.engine.book(T) == ([], [(5_100, 100)])  # the rest of the ask, as a NO bid


def test_book_is_ascending_with_no_side_at_no_prices_and_depth_takes_the_best() -> None:
    rig = make_rig()
    for price, n in ((3_000, 100), (4_000, 200), (3_500, 300), (3_000, 50)):
        rig.place("a", "bid", price, n)
    for price, n in ((6_000, 400), (7_000, 500), (6_500, 600)):
        rig.place("b", "ask", price, n)  # NO bids at 0.40, 0.30, 0.35
    yes, no = rig.engine.book(T)
    assert yes == [(3_000, 150), (3_500, 300), (4_000, 200)]
    assert no == [(3_000, 500), (3_500, 600), (4_000, 400)]
    assert rig.engine.book(T, 2) == ([(3_500, 300), (4_000, 200)], [(3_500, 600), (4_000, 400)])
    assert yes[-1][0] + no[-1][0] < 10_000  # not crossed: best YES bid 0.40 < best YES ask 0.60


def test_events_come_in_causal_order_and_replay_to_the_book() -> None:
    rig = make_rig()
    rig.place("a", "bid", 4_000, 300, client_order_id="a-1")
    rig.events.clear()
    res = rig.place("b", "ask", 4_000, 500, client_order_id="b-1")
    kinds = [type(e).__name__ for e in rig.events]
    assert kinds == ["BookDelta", "Trade", "Fill", "Fill", "PositionUpdate", "PositionUpdate", "OrderUpdate",
                     "BookDelta", "OrderUpdate"]
    taken, rested = rig.of(BookDelta)
    assert (taken.side, taken.price, taken.delta, taken.user_id, taken.client_order_id) == ("yes", 4_000, -300, "a",
                                                                                          "a-1")
    assert (rested.side, rested.price, rested.delta, rested.user_id, rested.client_order_id) == ("no", 6_000, 200,
                                                                                               "b", "b-1")
    assert [f.is_taker for f in rig.of(Fill)] == [True, False]
    assert [p.position.position for p in rig.of(PositionUpdate)] == [-300, 300]
    maker_update, taker_update = rig.of(OrderUpdate)
    assert maker_update.order.status == "executed" and taker_update.order.order_id == res.order.order_id
    assert taker_update.order.remaining_count == 200


def test_every_book_delta_adds_up_to_the_book() -> None:
    rig = make_rig()
    rig.place("a", "bid", 4_000, 300)
    o = rig.place("a", "bid", 3_900, 300).order
    rig.place("b", "ask", 6_000, 200)
    rig.place("c", "ask", 3_900, 350)
    rig.engine.decrease("a", o.order_id, reduce_by=100)
    rig.engine.amend("a", o.order_id, ticker=T, book_side="bid", price=3_800, count=200)
    level: dict[tuple[str, int], int] = {}
    for d in rig.of(BookDelta):
        level[(d.side, d.price)] = level.get((d.side, d.price), 0) + d.delta
    yes, no = rig.engine.book(T)
    assert {k: v for k, v in level.items() if v} == {**{("yes", p): c for p, c in yes},
                                                     **{("no", p): c for p, c in no}}
    assert {k for k, v in level.items() if v} == {("yes", 3_800), ("no", 4_000)}


def test_status_changes_are_events() -> None:
    rig = make_rig()
    rig.engine.set_status(T, "inactive")
    rig.engine.set_status(T, "inactive")  # no change, no event
    rig.engine.set_status(T, "active")
    assert [(e.ticker, e.status) for e in rig.of(MarketStatusChange)] == [(T, "inactive"), (T, "active")]
