"""Unit tests for services.signals.btc_model: composite spot, vol, momentum and settlement digitals."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from services.signals.btc_model import (
    SECONDS_PER_YEAR,
    BtcModelError,
    VenueQuote,
    composite_spot,
    digital_probabilities,
    ewma_vol,
    market_probabilities,
    momentum,
    range_probabilities,
)

ONE_DOLLAR = 10_000


def phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def closed_form_above(s: float, k: float, t_s: float, vol: float, mu: float = 0.0) -> float:
    """E2: P(S_T > K) = Φ(d2), d2 = [ln(S/K) + (μ - σ²/2)T] / (σ√T), T in 365-day years."""
    t = t_s / (365 * 86400)
    return phi((math.log(s / k) + (mu - vol**2 / 2) * t) / (vol * math.sqrt(t)))


def dollars(x: float) -> int:
    return round(x * ONE_DOLLAR)


# ---------------------------------------------------------------------------------------------- digitals


def test_matches_closed_form_without_averaging() -> None:
    strikes = np.array([95_000.0, 99_000.0, 100_000.0, 101_500.0, 108_000.0])
    p = digital_probabilities(100_000.0, strikes, ["greater"] * 5, 6 * 3600.0, 0.55, averaging_window_s=0.0)
    for k, got in zip(strikes, p, strict=True):
        assert got == pytest.approx(closed_form_above(100_000.0, k, 6 * 3600.0, 0.55), abs=1e-12)
    with_drift = digital_probabilities(100_000.0, strikes, ["greater"] * 5, 86400.0, 0.5, drift=1.5,
                                       averaging_window_s=0.0)
    assert with_drift[2] == pytest.approx(closed_form_above(100_000.0, 100_000.0, 86400.0, 0.5, 1.5), abs=1e-12)


def test_matches_closed_form_when_close_is_far_beyond_the_window() -> None:
    strikes = np.linspace(96_000.0, 104_000.0, 9)
    t = 24 * 3600.0  # T >> w = 60 s: the averaging correction is ~5e-4 of the variance
    p = digital_probabilities(100_000.0, strikes, ["greater"] * 9, t, 0.5)
    for k, got in zip(strikes, p, strict=True):
        assert got == pytest.approx(closed_form_above(100_000.0, k, t, 0.5), abs=2e-4)


def test_greater_ladder_is_monotone_and_less_is_its_complement() -> None:
    strikes = np.linspace(90_000.0, 110_000.0, 200)
    p = digital_probabilities(100_000.0, strikes, ["greater"] * 200, 3600.0, 0.6)
    assert np.all(np.diff(p) <= 0.0)
    assert p[0] > 0.99 and p[-1] < 0.01
    q = digital_probabilities(100_000.0, strikes, ["less"] * 200, 3600.0, 0.6)
    np.testing.assert_allclose(p + q, 1.0, atol=1e-12)
    ge = digital_probabilities(100_000.0, strikes, np.array(["greater_or_equal"] * 200), 3600.0, 0.6)
    np.testing.assert_array_equal(ge, p)  # continuous settlement: > and >= agree


def test_ranges_and_tails_sum_to_one() -> None:
    # A KXBTC-shaped event: $250 brackets, floor inclusive, cap = next floor - 0.01, plus both tails.
    floors = np.arange(95_000.0, 105_000.0, 250.0)
    caps = floors + 249.99
    for t_s, vol in ((3600.0, 0.5), (45.0, 0.5), (7 * 86400.0, 0.8)):
        mid = range_probabilities(100_123.0, floors, caps, t_s, vol)
        lo = digital_probabilities(100_123.0, [floors[0]], ["less"], t_s, vol)[0]
        hi = digital_probabilities(100_123.0, [caps[-1]], ["greater"], t_s, vol)[0]
        # The $0.01 gaps between a cap and the next floor hold a sliver of mass; it is below 1e-4 here.
        assert mid.sum() + lo + hi == pytest.approx(1.0, abs=1e-4)
        assert np.all(mid >= 0.0)
    contiguous = range_probabilities(100_000.0, floors[:-1], floors[1:], 3600.0, 0.5)
    lo = digital_probabilities(100_000.0, [floors[0]], ["less"], 3600.0, 0.5)[0]
    hi = digital_probabilities(100_000.0, [floors[-1]], ["greater"], 3600.0, 0.5)[0]
    assert contiguous.sum() + lo + hi == pytest.approx(1.0, abs=1e-12)


def test_market_probabilities_prices_a_mixed_ladder() -> None:
    types = ["less", "between", "between", "greater"]
    floors = [math.nan, 99_000.0, 100_000.0, 101_000.0]
    caps = [99_000.0, 99_999.99, 100_999.99, math.nan]
    p = market_probabilities(100_200.0, types, floors, caps, 1800.0, 0.5)
    assert p[0] == digital_probabilities(100_200.0, [99_000.0], ["less"], 1800.0, 0.5)[0]
    assert p[2] == range_probabilities(100_200.0, [100_000.0], [100_999.99], 1800.0, 0.5)[0]
    assert p.sum() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(BtcModelError, match="range_probabilities"):
        digital_probabilities(100_000.0, [1.0], ["between"], 60.0, 0.5)


def test_time_to_zero_limits() -> None:
    strikes = np.array([99_999.0, 100_000.0, 100_001.0])
    for t in (0.0, -5.0):
        np.testing.assert_array_equal(digital_probabilities(100_000.0, strikes, ["greater"] * 3, t, 0.5), [1, 0.5, 0])
        np.testing.assert_array_equal(digital_probabilities(100_000.0, strikes, ["less"] * 3, t, 0.5), [0, 0.5, 1])
    np.testing.assert_array_equal(digital_probabilities(100_000.0, strikes, ["greater"] * 3, 3600.0, 0.0), [1, 0.5, 0])
    # Approaching 0 continuously: no division by zero, probabilities go to the deterministic outcome.
    near = digital_probabilities(100_000.0, strikes, ["greater"] * 3, 1e-6, 0.5)
    assert near[0] > 0.999999 and near[1] == pytest.approx(0.5, abs=1e-6) and near[2] < 1e-6
    assert range_probabilities(100_000.0, [99_000.0], [100_500.0], 0.0, 0.5)[0] == 1.0
    assert range_probabilities(100_000.0, [100_500.0], [101_000.0], 0.0, 0.5)[0] == 0.0


def test_averaging_window_narrows_the_distribution() -> None:
    # Half a percent above spot, 5 minutes out: the averaged settlement (variance σ²(T - 2w/3)) is less
    # likely to get there than the plain price at T (variance σ²T).
    k, t, vol = [100_500.0], 300.0, 0.6
    plain = digital_probabilities(100_000.0, k, ["greater"], t, vol, averaging_window_s=0.0)[0]
    avg = digital_probabilities(100_000.0, k, ["greater"], t, vol)[0]
    assert avg < plain
    # And equals the closed form with T replaced by T - 2w/3 (drift term at the window's mean time T - w/2).
    tt, w = t / SECONDS_PER_YEAR, 60.0 / SECONDS_PER_YEAR
    d = (math.log(100_000.0 / 100_500.0) - vol**2 / 2 * (tt - w / 2)) / (vol * math.sqrt(tt - 2 * w / 3))
    assert avg == pytest.approx(phi(d), abs=1e-12)


def test_inside_the_averaging_window() -> None:
    k = [100_040.0]
    at_w = digital_probabilities(100_000.0, k, ["greater"], 60.0, 0.6)[0]
    just_in = digital_probabilities(100_000.0, k, ["greater"], 60.0 - 1e-9, 0.6)[0]
    assert just_in == pytest.approx(at_w, abs=1e-6)  # continuous through T = w
    ps = [digital_probabilities(100_000.0, k, ["greater"], t, 0.6)[0] for t in (60.0, 45.0, 30.0, 10.0, 1.0)]
    assert all(a > b for a, b in pairwise(ps))  # less time, less chance to climb 4 bps
    # Remaining variance σ²T³/(3w²) with 30 s left; the printed half of the window averaged 100,100.
    t, w, vol = 30.0 / SECONDS_PER_YEAR, 60.0 / SECONDS_PER_YEAR, 0.6
    centre = (0.5 * math.log(100_100.0) + 0.5 * math.log(100_000.0)) - vol**2 / 2 * t * t / (2 * w)
    expect = phi((centre - math.log(100_040.0)) / (vol * math.sqrt(t**3 / (3 * w * w))))
    got = digital_probabilities(100_000.0, k, ["greater"], 30.0, vol, window_avg=100_100.0)[0]
    assert got == pytest.approx(expect, abs=1e-9)  # the test subtracts logs of 1e5: ~1e-12 rounding
    assert got > 0.5  # already-printed prices above the strike carry it


def test_bad_inputs_raise() -> None:
    with pytest.raises(BtcModelError):
        digital_probabilities(-1.0, [1.0], ["greater"], 60.0, 0.5)
    with pytest.raises(BtcModelError):
        digital_probabilities(1.0, [1.0, 2.0], ["greater"], 60.0, 0.5)
    with pytest.raises(BtcModelError):
        range_probabilities(1.0, [2.0], [1.0], 60.0, 0.5)


# ---------------------------------------------------------------------------------------------- vol, momentum


def test_ewma_vol_recovers_a_known_vol_and_clips() -> None:
    rng = np.random.default_rng(42)
    sigma = 0.5
    dt = 1.0
    r = rng.normal(0.0, sigma * math.sqrt(dt / SECONDS_PER_YEAR), 20_000)
    v = ewma_vol(r, dt, halflife_s=3600.0, floor=0.05, cap=5.0)
    assert v == pytest.approx(sigma, rel=0.05)
    assert ewma_vol(r, dt, halflife_s=3600.0, floor=0.9, cap=5.0) == 0.9
    assert ewma_vol(r, dt, halflife_s=3600.0, floor=0.05, cap=0.3) == 0.3
    assert ewma_vol(np.array([]), dt, halflife_s=60.0, floor=0.1, cap=2.0) == 2.0  # no data: cautious
    # Recent returns dominate: a calm hour after a wild one reads calm with a short half-life.
    wild = rng.normal(0.0, 2.0 * math.sqrt(1 / SECONDS_PER_YEAR), 3600)
    calm = rng.normal(0.0, 0.3 * math.sqrt(1 / SECONDS_PER_YEAR), 3600)
    assert ewma_vol(np.concatenate([wild, calm]), 1.0, 300.0, 0.0, 10.0) == pytest.approx(0.3, rel=0.15)


def test_momentum_is_bounded_and_signed() -> None:
    rng = np.random.default_rng(3)
    trend_up = rng.normal(0.0, 1e-4, 3600) + 2e-5  # +2e-5/s with se ~2.4e-6: clearly significant
    assert momentum(trend_up, 1.0, 600.0) == 2.0  # hits the default bound
    assert momentum(-trend_up, 1.0, 600.0, max_abs=0.5) == -0.5
    unbounded = momentum(trend_up, 1.0, 600.0, max_abs=1e9)
    assert 0.0 < unbounded < 2e-5 * SECONDS_PER_YEAR * 1.5
    assert momentum(np.array([]), 1.0, 600.0) == 0.0


def test_momentum_is_zero_on_pure_noise_most_of_the_time() -> None:
    rng = np.random.default_rng(9)
    vals = np.array([momentum(rng.normal(0.0, 1e-4, 1200), 1.0, 300.0) for _ in range(200)])
    assert np.mean(vals == 0.0) > 0.85  # soft threshold at 2 se: ~95% exactly 0
    assert np.all(np.abs(vals) <= 2.0)


# ---------------------------------------------------------------------------------------------- composite spot


def quotes(**ages: float) -> dict[str, VenueQuote]:
    prices = {"coinbase": 100_000.00, "kraken": 100_010.00, "bitstamp": 99_995.00, "gemini": 100_004.00}
    return {v: VenueQuote(dollars(p), ages.get(v, 0.5), 1.0) for v, p in prices.items()}


def test_composite_drops_a_stale_venue_and_a_two_percent_outlier() -> None:
    q = quotes(bitstamp=30.0)
    q["binance"] = VenueQuote(dollars(102_000.0), 0.2, 1.0)
    c = composite_spot(q, max_age_s=10.0, outlier_bps=50.0)
    assert c.dropped == {"bitstamp": "stale", "binance": "outlier"}
    assert sorted(c.used) == ["coinbase", "gemini", "kraken"]
    assert c.price_ticks == dollars(100_004.00)  # median of 100,000 / 100,004 / 100,010
    assert 0.0 < c.confidence < 1.0


def test_composite_weighted_median_and_ties() -> None:
    q = {"a": VenueQuote(dollars(100_000.0), 0.0, 3.0), "b": VenueQuote(dollars(100_020.0), 0.0, 1.0),
         "c": VenueQuote(dollars(100_030.0), 0.0, 1.0)}
    assert composite_spot(q).price_ticks == dollars(100_000.0)
    two = {"a": VenueQuote(dollars(100_000.0), 0.0, 1.0), "b": VenueQuote(dollars(100_020.0), 0.0, 1.0)}
    assert composite_spot(two).price_ticks == dollars(100_010.0)
    split = {"a": VenueQuote(dollars(100_000.0), 0.0, 1.0), "b": VenueQuote(dollars(102_000.0), 0.0, 1.0)}
    none = composite_spot(split)
    assert none.price_ticks is None and none.confidence == 0.0
    assert composite_spot({}).price_ticks is None


def test_composite_confidence_decays_smoothly_as_venues_go_stale() -> None:
    confs = []
    for step in range(0, 61):
        age = step * 0.25  # 0 .. 15 s for two venues, one after the other
        confs.append(composite_spot(quotes(kraken=age, gemini=max(0.0, age - 5.0)), max_age_s=10.0).confidence)
    diffs = np.diff(confs)
    assert np.all(diffs <= 1e-12)  # never rises as data ages
    assert np.max(-diffs) < 0.05  # no cliff when a venue crosses max_age_s
    assert confs[0] > 0.9 and confs[-1] == pytest.approx(0.5 * confs[0], rel=0.2)


def test_composite_confidence_falls_with_disagreement() -> None:
    tight = composite_spot(quotes()).confidence
    spread = {"a": VenueQuote(dollars(100_000.0), 0.0, 1.0), "b": VenueQuote(dollars(100_300.0), 0.0, 1.0),
              "c": VenueQuote(dollars(99_700.0), 0.0, 1.0), "d": VenueQuote(dollars(100_150.0), 0.0, 1.0)}
    wide = composite_spot(spread)
    assert wide.dropped == {}
    assert wide.confidence < 0.5 * tight
    assert wide.dispersion_bps > 10.0
