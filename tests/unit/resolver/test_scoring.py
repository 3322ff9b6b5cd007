"""Forecast scores: Brier, market skill on the same rows, clipped log loss, sharpness, reliability bins."""

from __future__ import annotations

import math

from services.resolver.scoring import EPS, Scored, bins, brier, log_loss, summary


def test_single_scores() -> None:
    assert math.isclose(brier(0.7, 1), 0.09) and math.isclose(brier(0.7, 0), 0.49)
    assert math.isclose(log_loss(0.8, 1), -math.log(0.8)) and math.isclose(log_loss(0.8, 0), -math.log(0.2))
    assert math.isclose(log_loss(1.0, 0), -math.log(EPS))  # a certain miss is large, not infinite


def test_skill_compares_model_and_market_on_the_rows_that_have_a_price() -> None:
    rows = [Scored(p=0.9, outcome=1, p_market=0.6), Scored(p=0.2, outcome=0, p_market=0.5),
            Scored(p=0.5, outcome=1)]  # no market price: in the model's Brier, not in the skill
    s = summary(rows)
    assert s["n"] == 3 and s["n_market"] == 2
    assert math.isclose(s["brier"], (0.01 + 0.04 + 0.25) / 3)
    assert math.isclose(s["brier_market"], (0.16 + 0.25) / 2)
    assert math.isclose(s["brier_skill"], 1 - ((0.01 + 0.04) / 2) / ((0.16 + 0.25) / 2))
    assert math.isclose(s["hit_rate"], 1.0) and math.isclose(s["base_rate"], 2 / 3)
    mean = (0.9 + 0.2 + 0.5) / 3
    assert math.isclose(s["sharpness"], sum((p - mean) ** 2 for p in (0.9, 0.2, 0.5)) / 3)


def test_bins_cover_zero_to_one_and_count_every_row_once() -> None:
    rows = [Scored(p=p, outcome=o) for p, o in ((0.0, 0), (0.05, 0), (0.1, 1), (0.55, 1), (0.99, 1), (1.0, 1))]
    b = bins(rows, 10)
    assert [x["count"] for x in b] == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert b[9]["observed"] == 1.0 and b[0]["observed"] == 0.0 and b[3]["mean_p"] is None
    assert sum(x["count"] for x in b) == len(rows)


def test_traded_rows_sum_pnl_and_fees_and_empty_input_is_safe() -> None:
    s = summary([Scored(p=0.6, outcome=1, traded=True, pnl_ticks=3_900, fees_ticks=100),
                 Scored(p=0.6, outcome=0, traded=True, pnl_ticks=-6_100, fees_ticks=100), Scored(p=0.4, outcome=0)])
    assert (s["traded"], s["pnl_ticks"], s["fees_ticks"]) == (2, -2_200, 200)
    empty = summary([])
    assert empty["n"] == 0 and empty["brier"] is None and empty["brier_skill"] is None
