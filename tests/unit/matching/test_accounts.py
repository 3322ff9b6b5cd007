"""Money in the engine, to the $0.0001: fees, collateral, netting and realized P&L, settlement, rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest

from libs.common.matching.types import ExchangeError, Settlement
from libs.common.money import PriceGrid, fee
from tests.unit.matching.kit import FUNDS, T2, T, make_rig, req

CENTI_CENT = PriceGrid([(0, 10_000, 1)])  # every $0.0001 is a price: exposes sub-tick costs


def test_taker_fee_is_hand_computed_and_makers_pay_nothing_on_plain_quadratic() -> None:
    rig = make_rig()
    rig.place("b", "ask", 5_500, 1_000)  # rests: NO bid at 0.45
    res = rig.place("a", "bid", 5_600, 1_000)  # crosses at 0.55
    taker, maker = res.fills
    assert taker.fee == 1_733  # ceil(0.07 x 10 x 0.55 x 0.45) = ceil(0.173250) = $0.1733
    assert maker.fee == 0
    assert rig.engine.balance("a") == FUNDS - 10 * 5_500 - 1_733
    assert rig.engine.balance("b") == FUNDS - 10 * 4_500
    o = rig.engine.get_order("a", res.order.order_id)
    assert (o.taker_fill_cost, o.taker_fees, o.maker_fees) == (55_000, 1_733, 0)
    [pos] = rig.engine.positions("a")
    assert (pos.position, pos.fees_paid, pos.market_exposure, pos.total_traded) == (1_000, 1_733, 55_000, 55_000)


@pytest.mark.parametrize(("fee_type", "multiplier", "rounding", "taker_fee", "maker_fee"), [
    ("quadratic_with_maker_fees", Decimal(1), "tick", 1_733, 434),  # maker: ceil(0.0175 x 2.475) = $0.0434
    ("quadratic_with_combo_maker_fees", Decimal(1), "tick", 1_733, 867),  # maker: ceil(0.035 x 2.475)
    ("quadratic", Decimal("0.5"), "tick", 867, 0),  # taker: ceil(0.035 x 2.475) = $0.0867
    ("quadratic_with_maker_fees", Decimal(1), "cent", 1_800, 500),  # legacy: up to whole cents
])
def test_fee_schedules(fee_type: str, multiplier: Decimal, rounding: str, taker_fee: int, maker_fee: int) -> None:
    rig = make_rig(fee_type=fee_type, multiplier=multiplier, fee_rounding=rounding)
    rig.place("b", "ask", 5_500, 1_000)
    taker, maker = rig.place("a", "bid", 5_500, 1_000).fills
    assert (taker.fee, maker.fee) == (taker_fee, maker_fee)
    assert rig.engine.balance("b") == FUNDS - 45_000 - maker_fee
    assert rig.engine.get_order("b", maker.order_id).maker_fees == maker_fee


def test_balance_check_reserves_cost_and_fee_and_cancel_releases_it() -> None:
    rig = make_rig(funds=50_000)  # $5
    e = rig.engine
    with pytest.raises(ExchangeError) as short:
        rig.place("a", "bid", 5_000, 1_000)  # $5.00 + $0.1750 fee
    assert (short.value.code, short.value.status) == ("available_balance_too_low", 400)
    o = rig.place("a", "bid", 5_000, 900).order  # $4.50 + ceil(0.07 x 9 x 0.25) = $0.1575
    assert e.balance("a") == 50_000 - 45_000 - 1_575 and e.cash("a") == 50_000
    no = rig.place("b", "ask", 7_000, 100).order  # buys NO at 0.30: $0.30 + ceil(0.07 x 0.21) = $0.0147
    assert e.balance("b") == 50_000 - 3_000 - 147
    e.cancel("a", o.order_id)
    e.cancel("b", no.order_id)
    assert e.balance("a") == e.balance("b") == 50_000


def test_partial_fills_release_collateral_as_they_go() -> None:
    rig = make_rig()
    e = rig.engine
    rig.place("a", "bid", 4_000, 1_000)
    held = FUNDS - e.balance("a")
    assert held == 40_000 + fee(1_000, 4_000, rate="taker", fee_type="quadratic", multiplier=1)
    rig.place("b", "ask", 4_000, 400)
    # a paid $1.60 for 4 contracts (no maker fee) and now reserves for the remaining 6 only.
    assert e.cash("a") == FUNDS - 16_000
    assert e.balance("a") == FUNDS - 16_000 - 24_000 - fee(600, 4_000, rate="taker", fee_type="quadratic",
                                                              multiplier=1)


def test_netting_yes_then_no_realizes_pnl() -> None:
    rig = make_rig()
    e = rig.engine
    rig.place("b", "ask", 4_000, 1_000)
    rig.place("a", "bid", 4_000, 1_000)  # a: +10 YES at 0.40, taker fee $0.1680
    rig.place("c", "bid", 5_000, 400)
    rig.place("a", "ask", 5_000, 400)  # a sells 4 at 0.50 (buys NO at 0.50): fee ceil(0.07 x 4 x .25) = $0.07
    [pos] = e.positions("a")
    assert (pos.position, pos.market_exposure) == (600, 24_000)  # 6 left at a 0.40 basis
    assert pos.realized_pnl == 4 * 1_000 - 1_680 - 700 and pos.fees_paid == 2_380
    rig.place("c", "bid", 6_000, 800)
    rig.place("a", "ask", 6_000, 800)  # sells 6 more and goes 2 short (2 NO at 0.40); fee $0.1344
    [pos] = e.positions("a")
    assert (pos.position, pos.market_exposure) == (-200, 8_000)
    assert pos.realized_pnl == 4 * 1_000 + 6 * 2_000 - (1_680 + 700 + 1_344)
    # Cash: -$4.00 +$2.00 (4 pairs at $1 for $0.50 each) +$3.60 (6 pairs for $0.40 each) -$0.80 (2 NO) - fees.
    assert e.cash("a") == FUNDS - 40_000 + 20_000 + 36_000 - 8_000 - 3_724


def test_settlement_pays_winners_a_dollar_and_drops_positions() -> None:
    rig = make_rig()
    e = rig.engine
    rig.place("b", "ask", 3_000, 500)  # b: 5 NO at 0.70
    rig.place("a", "bid", 3_000, 500)  # a: 5 YES at 0.30
    rig.place("c", "bid", 2_000, 100)  # resting, cancelled at close
    a_fee = fee(500, 3_000, rate="taker", fee_type="quadratic", multiplier=1)
    with pytest.raises(ExchangeError):
        e.settle(T, "yes")  # still active
    e.set_status(T, "closed")
    assert e.balance("c") == FUNDS
    rows = e.settle(T, "yes")
    by_user = {s.user_id: s for s in rows}
    assert by_user["a"] == Settlement("a", T, "KXHIGHNY-26NOV23", "yes", 500, 0, 15_000, 0, 50_000, a_fee,
                                      rig.now[0])
    assert (by_user["b"].no_count, by_user["b"].no_total_cost, by_user["b"].revenue) == (500, 35_000, 0)
    assert e.balance("a") == FUNDS - 15_000 - a_fee + 50_000
    assert e.balance("b") == FUNDS - 35_000
    assert e.positions("a") == [] and e.positions("b") == [] and e.market(T).status == "finalized"
    assert e.settlements("a") == [by_user["a"]] and "c" not in by_user
    with pytest.raises(ExchangeError):
        e.settle(T, "no")  # once only
    rig.place("b", "ask", 6_000, 200, ticker=T2)
    rig.place("a", "bid", 6_000, 200, ticker=T2)
    e.set_status(T2, "closed")
    [no_wins] = [s for s in e.settle(T2, "no") if s.user_id == "b"]
    assert no_wins.revenue == 20_000


def test_portfolio_value_marks_each_position_at_its_sides_best_bid() -> None:
    rig = make_rig()
    e = rig.engine
    rig.place("b", "ask", 5_000, 500)
    rig.place("a", "bid", 5_000, 500)  # a +5 YES, b -5 (5 NO)
    assert e.portfolio_value("a") == 0  # no bids left to mark at
    rig.place("c", "bid", 4_500, 100)  # best YES bid 0.45
    rig.place("c", "ask", 6_000, 100)  # best NO bid 0.40
    assert e.portfolio_value("a") == 5 * 4_500
    assert e.portfolio_value("b") == 5 * 4_000
    assert e.portfolio_value("c") == 0


def test_sub_tick_costs_round_up_per_order_not_per_fill() -> None:
    rig = make_rig(grid=CENTI_CENT)
    e = rig.engine
    makers = [rig.place(u, "ask", 5_551, 1).order for u in ("b", "b", "c")]  # three 0.01-contract NO bids at 0.4449
    res = rig.place("a", "bid", 5_551, 3)
    assert len(res.fills) == 6
    # 3 x 0.01 contract at $0.5551 = 1.6653 ticks... x 100: the order pays ceil(166.53) = 167, not 3 x 56.
    assert e.get_order("a", res.order.order_id).taker_fill_cost == 167
    assert [e.get_order(m.user_id, m.order_id).maker_fill_cost for m in makers] == [45, 45, 45]  # ceil(44.49)
    fees = sum(f.fee for u in "abc" for f in e.fills(u))
    held_by_exchange = 3 * FUNDS - sum(e.cash(u) for u in "abc") - fees
    assert held_by_exchange - 3 * 100 == 167 + 135 - 300  # 3 pairs worth $0.03; 2 ticks of rounding kept


def test_a_taker_that_cannot_pay_for_the_next_fill_stops_there() -> None:
    # 0.07 contract at $0.50: the fee reserved is ceil(12.25) = 13 ticks, but 7 one-unit fills pay 2 each.
    rig = make_rig(grid=CENTI_CENT)
    e = rig.engine
    e.open_account("poor", 350 + 13)
    for _ in range(7):
        rig.place("b", "ask", 5_000, 1)
    res = e.place("poor", req("bid", 5_000, 7))
    assert (res.order.status, res.order.fill_count, res.order.last_update_reason) == ("canceled", 6,
                                                                                      "InsufficientBalance")
    assert e.balance("poor") == 363 - 6 * (50 + 2) and e.balance("poor") >= 0


def test_a_maker_that_cannot_pay_is_cancelled_and_matching_moves_on() -> None:
    rig = make_rig(grid=CENTI_CENT, fee_type="quadratic_with_maker_fees")
    e = rig.engine
    e.open_account("poor", 8)  # 7 units at $0.01 = 7 ticks, + a 1-tick taker-fee reserve
    poor = e.place("poor", req("bid", 100, 7)).order
    assert e.balance("poor") == 0
    rich = rig.place("b", "bid", 100, 7).order
    res = rig.place("c", "ask", 100, 1)  # the first fill would cost poor 1 + 1 fee and still reserve 7
    assert e.get_order("poor", poor.order_id).last_update_reason == "InsufficientBalance"
    assert [f.order_id for f in res.fills if not f.is_taker] == [rich.order_id]
    assert e.balance("poor") == 8
