"""The maker's quote arithmetic (services/executor/market_making.plan_quotes) and quick flip's target."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from libs.common.config import Settings
from libs.common.edge import BookTop
from libs.common.money import ONE_CONTRACT, PriceGrid
from libs.common.strategies import parse_allocation, route, strategy_caps
from services.executor.market_making import MakerParams, plan_quotes
from services.executor.quick_flip import target_price

GRID = PriceGrid.linear_cent()
MAKER_FEES = "quadratic_with_maker_fees"
WIDE = BookTop(best_yes_bid=3000, best_no_bid=3000, yes_bid_size=5000, no_bid_size=5000)  # 0.30 / 0.70
P = MakerParams.from_settings(Settings(mm_half_spread=0.02, mm_uncertainty_spread=0.0, mm_risk_aversion=0.004,
                                       mm_quote_contracts=10, mm_max_inventory=50, mm_max_event_inventory=100))


def plan(fair: float = 0.5, *, inventory: int = 0, event_inventory: int | None = None, tau: float = 1.0,
         confidence: float = 1.0, top: BookTop = WIDE, p: MakerParams = P):
    return plan_quotes(fair=fair, confidence=confidence, inventory=inventory,
                       event_inventory=abs(inventory) if event_inventory is None else event_inventory, tau=tau,
                       top=top, grid=GRID, fee_type="quadratic", fee_multiplier=Decimal(1), p=p)


def test_flat_quotes_are_symmetric_around_fair_value_and_wider_than_the_maker_fee() -> None:
    q = plan(0.5)
    assert q.bid is not None and q.ask is not None
    assert q.reservation == 5000
    assert 5000 - q.bid.yes_price == q.ask.yes_price - 5000
    assert q.ask.yes_price - q.bid.yes_price >= 2 * 200  # at least two half spreads of $0.02
    assert q.bid.count == q.ask.count == 10 * ONE_CONTRACT


def test_inventory_skews_both_quotes_against_the_position() -> None:
    flat, long_yes, long_no = plan(0.5), plan(0.5, inventory=30 * ONE_CONTRACT), plan(0.5, inventory=-30 * ONE_CONTRACT)
    assert long_yes.reservation < flat.reservation < long_no.reservation
    assert long_yes.bid.yes_price < flat.bid.yes_price and long_yes.ask.yes_price < flat.ask.yes_price
    assert long_no.bid.yes_price > flat.bid.yes_price and long_no.ask.yes_price > flat.ask.yes_price
    # Avellaneda-Stoikov: the shift is gamma x q x p(1-p) x tau = 0.004 x 30 x 0.25 x 1 = $0.03.
    assert flat.reservation - long_yes.reservation == 300
    # ... and shrinks as the close nears.
    assert plan(0.5, inventory=30 * ONE_CONTRACT, tau=0.1).reservation == 5000 - 30


def test_no_side_takes_the_inventory_past_its_caps() -> None:
    at_cap = plan(0.5, inventory=50 * ONE_CONTRACT)
    assert at_cap.bid is None and at_cap.why["bid"] == "inventory_cap"
    assert at_cap.ask is not None and at_cap.ask.count == 10 * ONE_CONTRACT  # selling down is always allowed
    near = plan(0.5, inventory=46 * ONE_CONTRACT)
    assert near.bid is not None and near.bid.count == 4 * ONE_CONTRACT  # only up to the cap
    event_full = plan(0.5, inventory=5 * ONE_CONTRACT, event_inventory=100 * ONE_CONTRACT)
    assert event_full.bid is None and event_full.ask is not None
    short_cap = plan(0.5, inventory=-50 * ONE_CONTRACT)
    assert short_cap.ask is None and short_cap.bid is not None


def test_quotes_never_cross_the_book_post_only() -> None:
    tight = BookTop(best_yes_bid=4900, best_no_bid=5000)  # YES 0.49 / 0.50
    q = plan(0.7, top=tight)  # fair far above the ask: the bid would take it
    assert q.bid is not None and q.bid.yes_price < tight.yes_ask
    q = plan(0.3, top=tight)
    assert q.ask is not None and q.ask.yes_price > tight.best_yes_bid


def test_uncertainty_widens_the_spread() -> None:
    p = replace(P, uncertainty_spread=400)
    sure, unsure = plan(0.5, p=p, confidence=1.0), plan(0.5, p=p, confidence=0.5)
    assert unsure.ask.yes_price - unsure.bid.yes_price >= sure.ask.yes_price - sure.bid.yes_price + 2 * 200


def test_extreme_fair_values_stay_inside_the_price_range() -> None:
    q = plan(0.995)
    assert q.ask is None or q.ask.yes_price < 10000
    assert q.bid is not None and 0 < q.bid.yes_price < 10000


@pytest.mark.parametrize("fair,want", [(7000, 5000 + 1000), (None, None)])
def test_quick_flip_target_goes_part_of_the_way_to_fair_value_never_below_break_even(fair, want) -> None:
    got = target_price(5000, fair, fraction=0.5, fee_type=MAKER_FEES, fee_multiplier=Decimal(1))
    floor = 5000 + 2 * 44 + 1  # maker fee of one contract at $0.50 is $0.0044 (0.0175 x 0.25), rounded up
    assert got == (want if want is not None else floor)
    assert target_price(5000, 5010, fraction=0.5, fee_type=MAKER_FEES, fee_multiplier=Decimal(1)) == floor
    assert target_price(9998, 9999, fraction=0.5, fee_type=MAKER_FEES, fee_multiplier=Decimal(1)) is None


def test_allocation_caps_and_routing() -> None:
    caps = strategy_caps(parse_allocation("directional=0.4,market_making=0.3"), 1_000_000)
    assert caps == {"directional": 400_000, "market_making": 300_000, "quick_flip": 0}
    assert route("KXHIGHNY", mm_series={"KXHIGHNY"}, flip_series=set()) == "market_making"
    assert route("kxbtcd", mm_series=set(), flip_series={"KXBTCD"}) == "quick_flip"
    assert route(None, mm_series=set(), flip_series=set()) == "directional"
    for bad in ("directional=1.2", "momentum=0.2", "directional=0.7,quick_flip=0.4", "directional", "x=nan",
                "directional=0.1,directional=0.2"):
        with pytest.raises(ValueError):
            parse_allocation(bad)


def test_a_series_without_a_model_is_quoted_around_the_book_mid_without_our_own_quotes() -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from libs.common.market_view import MarketView
    from services.executor.market_making import MarketMaker
    from tests.kit.factories import book_update, market_definition

    ticker = "KXNOMODEL-26DEC03-T5"
    view = MarketView()
    view.on_market(market_definition(ticker))
    # The crowd: YES 40c bid, NO 50c bid (YES ask 50c); ours on top: YES 44c bid and a 48c ask (NO 52c bid).
    st = view.on_book(book_update(ticker, yes_bids=((4_000, 5_000), (4_400, 1_000)),
                                  no_bids=((5_000, 5_000), (5_200, 1_000))))
    assert st is not None and st.family is None
    ours = [SimpleNamespace(status="resting", book_side="bid", yes_price=4_400, remaining_count=1_000),
            SimpleNamespace(status="resting", book_side="ask", yes_price=4_800, remaining_count=1_000)]
    now = datetime.now(UTC)
    fair = MarketMaker._book_fair(st, ours, now)
    assert fair is not None and fair.p == pytest.approx(0.45) and fair.confidence == 0.0  # (40c + 50c) / 2
    with_ours = MarketMaker._book_fair(st, [], now)
    assert with_ours is not None and with_ours.p == pytest.approx(0.46)  # our own 44c / 48c would pull it along
    only_ours = book_update(ticker, yes_bids=((4_400, 1_000),), no_bids=((5_000, 5_000),))
    st2 = view.on_book(only_ours)
    assert MarketMaker._book_fair(st2, ours[:1], now) is None  # without our bid the YES side is empty
