"""Order lifecycle: validation codes, reduce-only, amend and decrease priority, cancels, expiry, market status."""

from __future__ import annotations

from datetime import timedelta

import pytest

from libs.common.matching.types import ExchangeError
from tests.unit.matching.kit import FUNDS, NOW, T2, T, make_rig, req


def code(exc: pytest.ExceptionInfo[ExchangeError]) -> tuple[str, int]:
    return exc.value.code, exc.value.status


def test_validation_answers_with_kalshis_codes() -> None:
    rig = make_rig()
    e = rig.engine
    cases = [
        (req("bid", 5_000, 100, ticker="NOPE"), ("not_found", 404)),
        (req("bid", 5_050, 100), ("invalid_price", 400)),  # off the cent grid
        (req("bid", 0, 100), ("invalid_price", 400)),
        (req("bid", 10_000, 100), ("invalid_price", 400)),
        (req("bid", 5_000, 0), ("invalid_order_size", 400)),
        (req("bid", 5_000, -100), ("invalid_order_size", 400)),
    ]
    for bad, expected in cases:
        with pytest.raises(ExchangeError) as exc:
            e.place("a", bad)
        assert code(exc) == expected, bad
    with pytest.raises(ExchangeError) as exc:
        e.place("a", req("bid", 5_000, 100, time_in_force="immediate_or_cancel", expiration_time=NOW + timedelta(1)))
    assert code(exc) == ("invalid_parameters", 400)
    assert exc.value.message == "Cannot specify both immediate_or_cancel and expiration_ts"
    with pytest.raises(ExchangeError) as exc:
        e.place("a", req("bid", 5_000, 100, expiration_time=NOW))
    assert code(exc) == ("invalid_parameters", 400)
    assert exc.value.message == "Expiration timestamp must be in the future"
    with pytest.raises(ExchangeError) as exc:
        e.place("a", req("bid", 5_000, 100, time_in_force="fill_or_kill", expiration_time=NOW + timedelta(1)))
    assert code(exc) == ("invalid_parameters", 400)
    with pytest.raises(ExchangeError) as exc:
        e.market("NOPE")
    assert code(exc) == ("not_found", 404)
    assert e.orders("a") == []  # nothing above left an order behind


def test_paused_and_closed_markets_refuse_orders_with_different_codes() -> None:
    rig = make_rig()
    e = rig.engine
    o = rig.place("a", "bid", 4_000, 100).order
    e.set_status(T, "inactive")
    with pytest.raises(ExchangeError) as paused:
        rig.place("a", "bid", 4_000, 100)
    assert code(paused) == ("trading_is_paused", 409)
    with pytest.raises(ExchangeError) as paused_amend:
        e.amend("a", o.order_id, ticker=T, book_side="bid", price=4_100, count=100)
    assert code(paused_amend) == ("trading_is_paused", 409)
    e.decrease("a", o.order_id, reduce_by=50)  # cancels and decreases still work while paused
    e.set_status(T2, "closed")
    with pytest.raises(ExchangeError) as closed:
        rig.place("a", "bid", 4_000, 100, ticker=T2)
    assert code(closed) == ("MARKET_INACTIVE", 400)
    e.set_status(T, "closed")  # cancels a's order
    assert e.get_order("a", o.order_id).last_update_reason == "MarketClosed"
    for call in (lambda: e.cancel("a", o.order_id), lambda: e.decrease("a", o.order_id, reduce_by=1),
                 lambda: e.amend("a", o.order_id, ticker=T, book_side="bid", price=4_000, count=10)):
        with pytest.raises(ExchangeError) as after:
            call()
        assert code(after) == ("MARKET_INACTIVE", 400)
    fresh = make_rig()
    fresh.engine.set_status(T, "initialized")
    with pytest.raises(ExchangeError) as unopened:
        fresh.place("a", "bid", 4_000, 100)
    assert code(unopened) == ("MARKET_INACTIVE", 400)


def test_pause_cancels_only_cancel_on_pause_orders_and_reactivation_cancels_the_rest() -> None:
    rig = make_rig()
    e = rig.engine
    keep = rig.place("a", "bid", 4_000, 100).order
    drop = rig.place("b", "ask", 6_000, 100, cancel_order_on_pause=True).order
    e.set_status(T, "inactive")
    assert e.get_order("b", drop.order_id).status == "canceled"
    assert e.get_order("a", keep.order_id).status == "resting" and e.book(T) == ([(4_000, 100)], [])
    e.set_status(T, "active")
    assert e.get_order("a", keep.order_id).last_update_reason == "MarketReactivated"
    assert e.book(T) == ([], []) and e.balance("a") == FUNDS


def test_duplicate_client_order_id_is_409_for_any_earlier_order_of_the_user() -> None:
    rig = make_rig()
    o = rig.place("a", "bid", 4_000, 100, client_order_id="k1").order
    rig.engine.cancel("a", o.order_id)
    with pytest.raises(ExchangeError) as dup:
        rig.place("a", "bid", 4_100, 100, client_order_id="k1")
    assert code(dup) == ("order_already_exists", 409)
    assert len(rig.engine.orders("a")) == 1
    assert rig.place("b", "bid", 4_000, 100, client_order_id="k1").order.status == "resting"  # ids are per user


def test_reduce_only_caps_at_the_position_and_rejects_when_nothing_to_reduce() -> None:
    rig = make_rig()
    e = rig.engine
    with pytest.raises(ExchangeError) as flat:
        rig.place("a", "ask", 5_000, 100, reduce_only=True)
    assert code(flat) == ("invalid_order", 400) and flat.value.details == "reduce only"
    rig.place("b", "ask", 5_000, 300)
    rig.place("a", "bid", 5_000, 300)  # a is long 3 YES
    with pytest.raises(ExchangeError) as wrong_way:
        rig.place("a", "bid", 4_000, 100, reduce_only=True)  # buying more YES would not reduce
    assert wrong_way.value.details == "reduce only"
    before = e.balance("a")
    capped = rig.place("a", "ask", 6_000, 1_000, reduce_only=True).order
    assert (capped.initial_count, capped.remaining_count) == (300, 300)
    assert e.balance("a") == before  # selling what you hold needs no collateral


def test_a_resting_reduce_only_order_never_opens_a_position() -> None:
    rig = make_rig()
    e = rig.engine
    rig.place("b", "ask", 5_000, 300)
    rig.place("a", "bid", 5_000, 300)  # a: +3 YES
    ro = rig.place("a", "ask", 6_000, 300, reduce_only=True).order
    rig.place("c", "bid", 5_500, 200)
    rig.place("a", "ask", 5_500, 200, time_in_force="immediate_or_cancel")  # a sells 2 elsewhere: +1 left
    res = rig.place("c", "bid", 6_000, 300)
    assert [(f.order_id, f.count) for f in res.fills if not f.is_taker] == [(ro.order_id, 100)]
    assert e.position("a", T) == 0
    done = e.get_order("a", ro.order_id)
    assert (done.status, done.fill_count, done.last_update_reason) == ("canceled", 100, "ReduceOnly")


def test_amend_keeps_priority_only_for_a_pure_decrease() -> None:
    rig = make_rig()
    e = rig.engine
    a = rig.place("a", "bid", 4_000, 500).order
    b = rig.place("b", "bid", 4_000, 500).order
    e.amend("a", a.order_id, ticker=T, book_side="bid", price=4_000, count=300)  # decrease: stays first
    assert e.queue_position("a", a.order_id) == 0 and e.queue_position("b", b.order_id) == 300
    e.amend("a", a.order_id, ticker=T, book_side="bid", price=4_000, count=400)  # increase: back of the queue
    assert e.queue_position("a", a.order_id) == 500 and e.queue_position("b", b.order_id) == 0
    e.amend("b", b.order_id, ticker=T, book_side="bid", price=4_100, count=500)
    e.amend("b", b.order_id, ticker=T, book_side="bid", price=4_000, count=500)  # away and back: behind a
    assert e.queue_position("b", b.order_id) == 400 and e.queue_position("a", a.order_id) == 0
    assert e.book(T) == ([(4_000, 900)], [])
    for kw, expected in (({"ticker": T2, "book_side": "bid"}, "order_ticker_mismatch"),
                         ({"ticker": T, "book_side": "ask"}, "order_side_mismatch")):
        with pytest.raises(ExchangeError) as mismatch:
            e.amend("a", a.order_id, price=4_000, count=400, **kw)  # type: ignore[arg-type]
        assert code(mismatch) == (expected, 400)


def test_amend_counts_the_filled_part_and_can_cross_like_a_new_order() -> None:
    rig = make_rig()
    e = rig.engine
    o = rig.place("a", "bid", 4_000, 500, client_order_id="a-1").order
    rig.place("b", "ask", 4_000, 200)  # a: 200 filled, 300 left
    rig.place("c", "ask", 4_500, 100)  # rests: YES ask 0.45
    res = e.amend("a", o.order_id, ticker=T, book_side="bid", price=4_500, count=600,
                  updated_client_order_id="a-2")  # 200 filled + 400 wanted; crosses c at 0.45
    assert [(f.user_id, f.yes_price, f.count) for f in res.fills] == [("a", 4_500, 100), ("c", 4_500, 100)]
    assert (res.order.fill_count, res.order.remaining_count, res.order.status) == (300, 300, "resting")
    assert res.order.client_order_id == "a-2" and e.book(T) == ([(4_500, 300)], [])
    with pytest.raises(ExchangeError) as too_small:
        e.amend("a", o.order_id, ticker=T, book_side="bid", price=4_500, count=300)
    assert code(too_small) == ("invalid_order_size", 400)
    with pytest.raises(ExchangeError) as reused:
        rig.place("a", "bid", 1_000, 100, client_order_id="a-2")
    assert code(reused) == ("order_already_exists", 409)


def test_post_only_amend_that_would_cross_is_rejected_and_the_order_stays() -> None:
    rig = make_rig()
    e = rig.engine
    o = rig.place("a", "bid", 4_000, 100, post_only=True).order
    rig.place("b", "ask", 4_500, 100)
    with pytest.raises(ExchangeError) as cross:
        e.amend("a", o.order_id, ticker=T, book_side="bid", price=4_500, count=100)
    assert cross.value.details == "post only cross"
    kept = e.get_order("a", o.order_id)
    assert (kept.status, kept.price, kept.remaining_count) == ("resting", 4_000, 100)
    assert e.book(T) == ([(4_000, 100)], [(5_500, 100)])


def test_decrease_keeps_priority_and_to_zero_cancels() -> None:
    rig = make_rig()
    e = rig.engine
    a = rig.place("a", "bid", 4_000, 500).order
    b = rig.place("b", "bid", 4_000, 500).order
    assert e.decrease("a", a.order_id, reduce_by=200).remaining_count == 300
    assert e.queue_position("b", b.order_id) == 300 and e.queue_position("a", a.order_id) == 0
    assert e.decrease("a", a.order_id, reduce_to=100).remaining_count == 100
    for kw in ({}, {"reduce_by": 1, "reduce_to": 1}):
        with pytest.raises(ExchangeError) as both:
            e.decrease("a", a.order_id, **kw)  # type: ignore[arg-type]
        assert code(both) == ("invalid_parameters", 400)
    with pytest.raises(ExchangeError) as up:
        e.decrease("a", a.order_id, reduce_to=200)
    assert code(up) == ("invalid_order_size", 400)
    gone = e.decrease("a", a.order_id, reduce_to=0)
    assert (gone.status, gone.remaining_count) == ("canceled", 0)
    assert e.decrease("b", b.order_id, reduce_by=900).status == "canceled"  # more than is left: the rest goes
    assert e.book(T) == ([], []) and e.balance("a") == FUNDS and e.balance("b") == FUNDS


def test_cancel_and_cancel_all_release_collateral() -> None:
    rig = make_rig()
    e = rig.engine
    o = rig.place("a", "bid", 4_000, 500).order
    rig.place("a", "ask", 7_000, 200, ticker=T2)
    other = rig.place("b", "bid", 3_000, 100).order
    assert e.balance("a") < FUNDS
    order, reduced = e.cancel("a", o.order_id)
    assert (order.status, order.last_update_reason, reduced) == ("canceled", "Canceled", 500)
    with pytest.raises(ExchangeError) as again:
        e.cancel("a", o.order_id)
    assert code(again) == ("invalid_order", 400)
    with pytest.raises(ExchangeError) as not_yours:
        e.cancel("b", o.order_id)
    assert code(not_yours) == ("not_found", 404)
    cancelled = e.cancel_all("a")
    assert [x.ticker for x in cancelled] == [T2] and e.balance("a") == FUNDS
    assert e.get_order("b", other.order_id).status == "resting"
    assert [x.status for x in e.orders("a")] == ["canceled", "canceled"]


def test_gtc_orders_expire_at_their_expiration_time() -> None:
    rig = make_rig()
    e = rig.engine
    soon = rig.place("a", "bid", 2_500, 1_000, expiration_time=NOW + timedelta(minutes=1)).order
    later = rig.place("a", "bid", 2_400, 100, expiration_time=NOW + timedelta(minutes=5)).order
    assert e.expire() == []
    rig.tick(120)
    expired = e.expire()
    assert [x.order_id for x in expired] == [soon.order_id]
    assert e.get_order("a", soon.order_id).last_update_reason == "Expired"
    assert e.get_order("a", later.order_id).status == "resting"
    e.cancel("a", later.order_id)
    assert e.expire(NOW + timedelta(hours=1)) == [] and e.balance("a") == FUNDS


def test_orders_are_newest_first_and_private() -> None:
    rig = make_rig()
    e = rig.engine
    first = rig.place("a", "bid", 1_000, 100).order
    second = rig.place("a", "bid", 1_100, 100, ticker=T2).order
    assert [o.order_id for o in e.orders("a")] == [second.order_id, first.order_id]
    assert [o.order_id for o in e.orders("a", ticker=T)] == [first.order_id]
    assert e.orders("a", status="executed") == []
    with pytest.raises(ExchangeError) as other:
        e.get_order("b", first.order_id)
    assert code(other) == ("not_found", 404)
