"""Unit tests for libs.common.edge: fee-aware taker/maker edges to $0.0001 and the action choice."""

from __future__ import annotations

import pytest

from libs.common.edge import BookTop, EdgeError, best_action, edges
from libs.common.money import PriceGrid

CENT = PriceGrid.linear_cent()
TAPERED = PriceGrid.from_api([
    {"start": "0.0000", "end": "0.1000", "step": "0.0010"},
    {"start": "0.1000", "end": "0.9000", "step": "0.0100"},
    {"start": "0.9000", "end": "1.0000", "step": "0.0010"},
])

# YES bid 0.43, NO bid 0.45 -> YES ask 0.55, NO ask 0.57.
TOP = BookTop(best_yes_bid=4300, best_no_bid=4500, yes_bid_size=500, no_bid_size=1000)


def test_book_top_asks() -> None:
    assert TOP.yes_ask == 5500 and TOP.no_ask == 5700
    assert BookTop(None, None).yes_ask is None and BookTop(None, None).no_ask is None


def test_taker_and_maker_edges_by_hand_on_plain_quadratic() -> None:
    e = edges(0.62, TOP, CENT, fee_type="quadratic", fee_multiplier=1)
    # BUY YES taker at 0.55: fee ceil(0.07 x 0.55 x 0.45 = 0.017325) = 0.0174; 0.62 - 0.55 - 0.0174 = 0.0526.
    assert e.yes.taker_price == 5500 and e.yes.taker_yes_price == 5500
    assert e.yes.taker_fee == 174
    assert e.yes.taker_edge == 526
    # BUY YES maker: 0.43 -> 0.44 (does not cross 0.55); plain quadratic makers pay 0: 0.62 - 0.44 = 0.18.
    assert e.yes.maker_price == 4400 and e.yes.maker_improves
    assert e.yes.maker_fee == 0 and e.yes.maker_edge == 1800
    assert e.yes.book_side == "bid"
    # BUY NO taker at the NO ask 0.57: fee ceil(0.07 x 0.57 x 0.43 = 0.017157) = 0.0172;
    # 0.38 - 0.57 - 0.0172 = -0.2072. V2: side ask at YES price 0.43.
    assert e.no.taker_price == 5700 and e.no.taker_yes_price == 4300
    assert e.no.taker_fee == 172 and e.no.taker_edge == -2072
    # BUY NO maker: NO bid 0.45 -> 0.46, i.e. V2 ask at YES 0.54 (above the 0.43 YES bid): 0.38 - 0.46 = -0.08.
    assert e.no.maker_price == 4600 and e.no.maker_yes_price == 5400
    assert e.no.maker_edge == -800
    assert e.no.book_side == "ask"


def test_maker_fee_series() -> None:
    e = edges(0.62, TOP, CENT, fee_type="quadratic_with_maker_fees", fee_multiplier=1)
    # maker fee at 0.44: ceil(0.0175 x 0.44 x 0.56 = 0.004312) = 0.0044 -> 0.62 - 0.44 - 0.0044 = 0.1756.
    assert e.yes.maker_fee == 44 and e.yes.maker_edge == 1756
    assert e.yes.taker_edge == 526  # taker side unchanged
    half = edges(0.62, TOP, CENT, fee_type="quadratic_with_maker_fees", fee_multiplier="0.5")
    # taker fee ceil(0.5 x 0.017325 = 0.0086625) = 0.0087 -> 0.0613; maker ceil(0.002156) = 0.0022 -> 0.1778.
    assert half.yes.taker_fee == 87 and half.yes.taker_edge == 613
    assert half.yes.maker_fee == 22 and half.yes.maker_edge == 1778


def test_fee_is_per_order_then_per_contract_and_edges_round_down() -> None:
    # 10 contracts at 0.55: fee ceil(0.07 x 10 x 0.2475 = 0.17325) = 0.1733 -> 0.01733 per contract;
    # 0.62 - 0.55 - 0.01733 = 0.05267 -> 526 ticks (floored, never rounded up).
    e = edges(0.62, TOP, CENT, fee_type="quadratic", fee_multiplier=1, count=1000)
    assert e.yes.taker_fee == 1733 and e.yes.taker_edge == 526
    # Half a contract at 0.55: fee ceil(0.0086625) = 0.0087 for 0.5 -> 0.0174 per contract -> 526.
    assert edges(0.62, TOP, CENT, fee_type="quadratic", fee_multiplier=1, count=50).yes.taker_edge == 526
    # A probability that is not a whole tick: 0.62005 -> 6200.5 - 5500 - 174 = 526.5 -> 526.
    assert edges(0.62005, TOP, CENT, fee_type="quadratic", fee_multiplier=1).yes.taker_edge == 526
    # Negative edges floor away from zero: NO at p 0.37995: 3799.5 - 5700 - 172 = -2072.5 -> -2073.
    assert edges(0.62005, TOP, CENT, fee_type="quadratic", fee_multiplier=1).no.taker_edge == -2073


def test_maker_joins_the_bid_when_improving_would_cross() -> None:
    tight = BookTop(best_yes_bid=5400, best_no_bid=4500)  # YES 0.54 / 0.55: one-cent spread
    e = edges(0.62, tight, CENT, fee_type="quadratic", fee_multiplier=1)
    assert e.yes.maker_price == 5400 and not e.yes.maker_improves  # 0.55 would cross, so join 0.54
    assert e.yes.maker_edge == 800
    assert e.no.maker_price == 4500 and e.no.maker_yes_price == 5500 and not e.no.maker_improves
    # On a sub-cent grid there is room: 0.054 -> 0.055 below an ask of 0.060.
    sub = BookTop(best_yes_bid=540, best_no_bid=9400)
    s = edges(0.10, sub, TAPERED, fee_type="quadratic", fee_multiplier=1)
    assert s.yes.maker_price == 550 and s.yes.maker_improves
    assert s.no.maker_yes_price == 590 and s.no.maker_price == 9410


def test_one_sided_and_empty_books() -> None:
    no_asks = BookTop(best_yes_bid=4300, best_no_bid=None)
    e = edges(0.62, no_asks, CENT, fee_type="quadratic", fee_multiplier=1)
    assert e.yes.taker_edge is None and e.yes.maker_price == 4400
    assert e.no.taker_price == 5700
    assert e.no.maker_yes_price == 4400 and e.no.maker_price == 5600  # rest one tick inside the empty NO side
    no_bids = BookTop(best_yes_bid=None, best_no_bid=4500)
    f = edges(0.62, no_bids, CENT, fee_type="quadratic", fee_multiplier=1)
    assert f.yes.maker_price == 5400 and f.no.taker_edge is None
    empty = edges(0.62, BookTop(None, None), CENT, fee_type="quadratic", fee_multiplier=1)
    assert empty.yes.maker_edge is None and empty.no.maker_edge is None
    d = best_action(empty, min_edge=100, taker_min_edge=300)
    assert d.action == "none" and d.reason == "empty_book"


def test_best_action_prefers_maker_and_takes_only_above_the_taker_threshold() -> None:
    e = edges(0.62, TOP, CENT, fee_type="quadratic", fee_multiplier=1)  # taker 526, maker 1800
    take = best_action(e, min_edge=200, taker_min_edge=500)
    assert (take.action, take.mode, take.limit_price, take.edge, take.reason) == ("buy_yes", "taker", 5500, 526,
                                                                                   "taker_edge")
    assert take.book_side == "bid"
    make = best_action(e, min_edge=200, taker_min_edge=527)
    assert (make.action, make.mode, make.limit_price, make.edge, make.reason) == ("buy_yes", "maker", 4400, 1800,
                                                                                   "maker_edge")
    none = best_action(e, min_edge=1801, taker_min_edge=2000)
    assert (none.action, none.mode, none.limit_price, none.reason) == ("none", None, None, "no_edge")
    assert none.edge == 1800
    with pytest.raises(EdgeError):
        best_action(e, min_edge=500, taker_min_edge=100)


def test_best_action_buys_no_in_v2_terms() -> None:
    e = edges(0.30, TOP, CENT, fee_type="quadratic", fee_multiplier=1)
    # NO: p 0.70; maker NO at 0.46 -> 0.70 - 0.46 = 0.24; taker at 0.57 - 0.0172 -> 0.1128.
    assert e.no.maker_edge == 2400 and e.no.taker_edge == 1128
    d = best_action(e, min_edge=300, taker_min_edge=1500)
    assert (d.action, d.mode, d.limit_price, d.book_side) == ("buy_no", "maker", 5400, "ask")
    t = best_action(e, min_edge=300, taker_min_edge=1000)
    assert (t.action, t.mode, t.limit_price, t.book_side, t.edge) == ("buy_no", "taker", 4300, "ask", 1128)


def test_bad_inputs() -> None:
    with pytest.raises(EdgeError):
        edges(1.2, TOP, CENT, fee_type="quadratic", fee_multiplier=1)
    with pytest.raises(EdgeError):
        edges(float("nan"), TOP, CENT, fee_type="quadratic", fee_multiplier=1)
    with pytest.raises(EdgeError):
        edges(0.5, TOP, CENT, fee_type="quadratic", fee_multiplier=1, count=0)
    with pytest.raises(EdgeError):
        edges(0.5, BookTop(0, 4500), CENT, fee_type="quadratic", fee_multiplier=1)
