"""Sizing (Kelly, fixed), netted event exposure and position arithmetic — pure functions, exact integers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from libs.common.money import fee
from services.executor.exposure import Holding, Strike, event_exposure
from services.executor.ledger import FillFact, apply_to_position
from services.executor.sizing import kelly_fraction, order_cost, size_order

Q = {"fee_type": "quadratic", "fee_multiplier": Decimal(1)}


def test_kelly_fraction_is_edge_over_odds() -> None:
    assert kelly_fraction(0.6, 5000) == pytest.approx(0.2)  # (0.6 - 0.5) / 0.5
    assert kelly_fraction(0.5, 5000) == 0.0
    assert kelly_fraction(0.4, 5000) == 0.0  # never negative: no short through Kelly
    assert kelly_fraction(0.9, 0) == 0.0 and kelly_fraction(0.9, 10_000) == 0.0


def test_kelly_size_scales_by_fraction_and_confidence_and_stays_within_budget() -> None:
    kw = {"mode": "kelly", "p_leg": 0.6, "leg_price": 5000, "taker": False, "bankroll": 1_000 * 10_000,
          "fixed_budget": 0, "max_order": 10**9, **Q}
    full = size_order(confidence=1.0, kelly_scale=1.0, **kw)
    quarter = size_order(confidence=1.0, kelly_scale=0.25, **kw)
    half_conf = size_order(confidence=0.5, kelly_scale=0.25, **kw)
    assert full.count > quarter.count > half_conf.count > 0
    unit_fee = fee(100, 5000, rate="maker", **{"fee_type": "quadratic", "multiplier": 1})
    k = (0.6 - (5000 + unit_fee) / 10_000) / (1 - (5000 + unit_fee) / 10_000)
    budget = int(1_000 * 10_000 * k * 0.25)
    assert order_cost(quarter.count, 5000, taker=False, **Q) <= budget
    assert order_cost(quarter.count + 1, 5000, taker=False, **Q) > budget - 100  # as big as the budget allows


def test_max_order_and_displayed_size_cap_the_count() -> None:
    kw = {"mode": "kelly", "p_leg": 0.9, "leg_price": 3000, "confidence": 1.0, "bankroll": 10**9,
          "kelly_scale": 1.0, "fixed_budget": 0, **Q}
    capped = size_order(taker=False, max_order=100_000, **kw)
    assert order_cost(capped.count, 3000, taker=False, **Q) <= 100_000
    assert size_order(taker=True, max_order=10**9, available=250, **kw).count == 250


def test_fixed_sizing_and_refusals() -> None:
    kw = {"p_leg": 0.2, "leg_price": 2500, "taker": False, "confidence": 1.0, "bankroll": 10**8,
          "kelly_scale": 0.25, "max_order": 10**9, **Q}
    fixed = size_order(mode="fixed", fixed_budget=50_000, **kw)
    assert 0 < order_cost(fixed.count, 2500, taker=False, **Q) <= 50_000
    assert size_order(mode="kelly", fixed_budget=0, **kw).reason == "no_edge"
    assert size_order(mode="kelly", fixed_budget=0, **{**kw, "p_leg": 0.9, "bankroll": 0}).reason == "no_bankroll"


BRACKETS = {"T50": Strike("less", None, Decimal(50)), "B50.5": Strike("between", Decimal(50), Decimal(51)),
            "B52.5": Strike("between", Decimal(52), Decimal(53)), "T53": Strike("greater", Decimal(53), None)}


def test_yes_on_brackets_loses_everything_only_where_no_bracket_pays() -> None:
    # 10 contracts (1000) at 20c ($2 = 20,000 ticks) on three brackets; a $1 payout is 100,000 for 10.
    held = {t: Holding(yes=1000, cost=20_000) for t in ("T50", "B50.5", "T53")}
    # 51 < x < 52 is covered by none of them (this ladder has a gap): all three lose.
    assert event_exposure(held, BRACKETS) == 60_000
    exhaustive = {"L": Strike("less", None, Decimal(50)), "M": Strike("between", Decimal(50), Decimal(51)),
                  "H": Strike("greater", Decimal(51), None)}
    ladder = {t: Holding(yes=1000, cost=20_000) for t in exhaustive}
    # Exactly one always pays $10 against $6 spent: no outcome loses, although each market alone can.
    assert event_exposure(ladder, exhaustive) == 0
    assert sum(h.worst() for h in ladder.values()) == 60_000


def test_yes_and_no_on_related_markets_net() -> None:
    held = {"B50.5": Holding(yes=1000, cost=40_000), "B52.5": Holding(no=1000, cost=60_000)}
    # B52.5 resolving YES makes both lose: 100,000; the other outcomes make 0 or +100,000.
    assert event_exposure(held, BRACKETS) == 100_000
    nested = {"A": Strike("greater", Decimal(100), None), "B": Strike("greater", Decimal(110), None)}
    spread = {"A": Holding(yes=1000, cost=60_000), "B": Holding(no=1000, cost=70_000)}
    # x > 110 or x <= 100: one leg pays $10 against $13 spent; 100 < x <= 110: both pay.
    assert event_exposure(spread, nested) == 30_000
    assert sum(h.worst() for h in spread.values()) == 130_000


def test_unknown_strike_rules_are_not_netted() -> None:
    held = {"X": Holding(yes=1000, cost=3000), "Y": Holding(no=1000, cost=3000)}
    assert event_exposure(held, {"X": None, "Y": None}) == 6000


def _fill(side: str, count: int, yes_price: int, fee_: int = 0) -> FillFact:
    return FillFact("t", "o", "X", "bid" if side == "yes" else "ask", side, yes_price, count, fee_, False,
                    datetime(2026, 1, 1, tzinfo=UTC))


def test_position_arithmetic_opens_adds_nets_and_flips() -> None:
    pos, cost, realized = apply_to_position(0, 0, 0, _fill("yes", 1000, 4000))  # 10 YES at 40c
    assert (pos, cost, realized) == (1000, 40_000, 0)
    pos, cost, realized = apply_to_position(pos, cost, realized, _fill("yes", 1000, 5000))  # 10 more at 50c
    assert (pos, cost, realized) == (2000, 90_000, 0)
    # 5 NO at 60c redeem 5 pairs for $5: against a quarter of the YES cost ($2.25) and the NO ($3.00).
    pos, cost, realized = apply_to_position(pos, cost, realized, _fill("no", 500, 4000))
    assert (pos, cost, realized) == (1500, 67_500, -2_500)
    # 20 NO at 70c: 15 close the YES ($15 against $6.75 + $10.50), 5 NO remain costing $3.50.
    pos, cost, realized = apply_to_position(pos, cost, realized, _fill("no", 2000, 3000))
    assert (pos, cost, realized) == (-500, 35_000, -25_000)
