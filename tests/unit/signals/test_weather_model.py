"""Unit tests for services.signals.weather_model: ladder sums, observed-max conditioning, calibration, confidence."""

from __future__ import annotations

import math
from itertools import pairwise
from statistics import NormalDist

import numpy as np
import pytest

from libs.common.station_bias import fit_station_bias
from services.signals.weather_model import (
    Bracket,
    LadderError,
    WeatherForecastResult,
    WeatherModelError,
    WeatherParams,
    bracket_probabilities,
    excess_probability,
    remaining_maxima,
)


def ladder(low: int = 55, high: int = 64) -> list[Bracket]:
    """A KXHIGH-shaped ladder: "<low" tail, 2 °F brackets low..high, ">high" tail (kalshi_api.md §9.1)."""
    out = [Bracket("T-LOW", "less", cap=low)]
    out += [Bracket(f"B{a + 0.5}", "between", floor=a, cap=a + 1) for a in range(low, high, 2)]
    out.append(Bracket("T-HIGH", "greater", floor=high))
    return out


def rounded_normal(b: Bracket, mu: float, sd: float) -> float:
    """P(bracket) for a whole-°F settlement of a N(mu, sd) continuous max, with the half-degree correction."""
    lo, hi = b.integer_range()
    f = NormalDist(mu, sd).cdf
    return (1.0 if hi == math.inf else f(hi + 0.5)) - (0.0 if lo == -math.inf else f(lo - 0.5))


def normal_members(seed: int, n: int = 150, mu: float = 60.0, sd: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mu, sd, n)


def test_integer_ranges_follow_kalshi_strike_semantics() -> None:
    assert Bracket("a", "less", cap=63).integer_range() == (-math.inf, 62)  # "62° or below"
    assert Bracket("b", "between", floor=63, cap=64).integer_range() == (63, 64)  # inclusive
    assert Bracket("c", "greater", floor=70).integer_range() == (71, math.inf)  # "71° or above"
    assert Bracket("d", "greater_or_equal", floor=70).integer_range() == (70, math.inf)
    assert Bracket("e", "less_or_equal", cap=62).integer_range() == (-math.inf, 62)


def test_ladder_sums_to_one_and_matches_the_pmf() -> None:
    members = {"gefs": normal_members(1, 31), "ecmwf": normal_members(2, 51, mu=61.0), "icon": normal_members(3, 40)}
    r = bracket_probabilities(members, ladder(), lead_hours=30.0)
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-12)
    assert r.pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert r.coverage == pytest.approx(1.0, abs=1e-9)
    assert all(0.0 <= p <= 1.0 for p in r.probabilities.values())
    # A bracket equals the pmf summed over its whole degrees.
    pmf = dict(zip(r.support.tolist(), r.pmf.tolist(), strict=True))
    assert r.probabilities["B59.5"] == pytest.approx(pmf[59] + pmf[60], abs=1e-9)
    assert r.models_used == ("gefs", "ecmwf", "icon")
    assert r.n_members == 122


def test_calibrated_against_a_known_normal_truth_without_sampling_noise() -> None:
    # 150 members at the N(60, 3) quantiles: a noise-free "draw", so the error measured is the model's own
    # bias. lead_hours=0 switches off the lead inflation; the Silverman smoothing is variance-corrected, and
    # the default 2% fat-tail component is what is left (~0.004). An uncorrected kernel (sd 3.22) would miss
    # by ~0.02 and fail here.
    members = np.array([NormalDist(60, 3).inv_cdf((i + 0.5) / 150) for i in range(150)])
    r = bracket_probabilities({"m": members}, ladder(), lead_hours=0.0)
    for b in ladder():
        assert r.probabilities[b.ticker] == pytest.approx(rounded_normal(b, 60, 3), abs=0.005), b.ticker
    assert r.mean_f == pytest.approx(60.0, abs=0.05)


def test_seeded_normal_draws_are_unbiased_within_two_points() -> None:
    # 150 random members carry ~±0.03 of sampling error per 2 °F bracket (binomial/mean/sd noise, any model),
    # so a single seed cannot honestly be held to 0.02. Averaged over 20 seeded ensembles the sampling noise
    # falls to ~0.006 and what remains is the model's bias: within 0.02 of the rounded-normal truth.
    brackets = ladder()
    avg = dict.fromkeys((b.ticker for b in brackets), 0.0)
    for seed in range(20):
        r = bracket_probabilities({"m": normal_members(seed)}, brackets, lead_hours=0.0)
        for k, p in r.probabilities.items():
            avg[k] += p / 20
    for b in brackets:
        assert avg[b.ticker] == pytest.approx(rounded_normal(b, 60, 3), abs=0.02), b.ticker


def test_observed_max_zeroes_the_brackets_it_exceeds() -> None:
    members = {"m": normal_members(7)}
    r = bracket_probabilities(members, ladder(), lead_hours=6.0, observed_max_f=63.0, hours_left_in_day=10.0)
    for t in ("T-LOW", "B55.5", "B57.5", "B59.5", "B61.5"):
        assert r.probabilities[t] == 0.0, t
    assert r.probabilities["B63.5"] > 0.5
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-12)
    assert r.min_possible_f == 63
    assert r.pmf[r.support < 63].sum() == 0.0


def test_observed_max_uses_the_half_degree_rounding() -> None:
    # The CLI max is the rounded value: a running max of 64.4 can still settle at 64, 64.6 cannot.
    members = {"m": normal_members(7)}
    at_644 = bracket_probabilities(members, ladder(), lead_hours=6.0, observed_max_f=64.4)
    at_646 = bracket_probabilities(members, ladder(), lead_hours=6.0, observed_max_f=64.6)
    assert at_644.probabilities["B63.5"] > 0.0 and at_644.min_possible_f == 64
    assert at_646.probabilities["B63.5"] == 0.0 and at_646.min_possible_f == 65


def test_late_day_tightens_monotonically_to_the_observed_max() -> None:
    members = {"m": normal_members(11, mu=64.0)}
    sds, p_obs = [], []
    for h in (14.0, 12.0, 8.0, 4.0, 1.0, 0.0):
        r = bracket_probabilities(members, ladder(), lead_hours=4.0, observed_max_f=62.0, hours_left_in_day=h)
        sds.append(r.sd_f)
        p_obs.append(float(r.pmf[r.support == 62][0]))
    assert sds[0] == pytest.approx(sds[1])  # no tightening with 12 h or more left
    assert all(a > b for a, b in pairwise(sds[1:]))
    assert all(a < b for a, b in pairwise(p_obs[1:]))
    assert p_obs[-1] == 1.0 and sds[-1] == 0.0  # end of day: the observed max is the answer


def test_observed_far_above_the_forecast_puts_all_mass_at_the_observation() -> None:
    r = bracket_probabilities({"m": normal_members(3, sd=1.0)}, ladder(), lead_hours=2.0, min_sd_f=0.5,
                              tail_weight=0.0, observed_max_f=80.0)
    assert r.probabilities["T-HIGH"] == 1.0
    assert r.mean_f == 80.0


def test_more_lead_time_widens_the_distribution() -> None:
    members = {"m": normal_members(5)}
    sds = [bracket_probabilities(members, ladder(), lead_hours=h).sd_f for h in (0.0, 24.0, 72.0, 120.0)]
    assert sds == sorted(sds) and sds[-1] > sds[0] + 0.5
    ks = [bracket_probabilities(members, ladder(), lead_hours=h).kernel_sd_f for h in (0.0, 24.0, 72.0)]
    assert ks[0] < ks[1] < ks[2]


def test_kernel_floor_and_bias_shift() -> None:
    tight = {"m": np.full(30, 60.0)}  # members in full agreement: only the floor gives spread
    r = bracket_probabilities(tight, ladder(), lead_hours=0.0, min_sd_f=1.0, tail_weight=0.0)
    assert r.kernel_sd_f == 1.0
    assert r.probabilities["B59.5"] == pytest.approx(NormalDist(60, 1).cdf(60.5) - NormalDist(60, 1).cdf(58.5))
    shifted = bracket_probabilities(tight, ladder(), lead_hours=0.0, bias_f=2.0, tail_weight=0.0)
    assert shifted.mean_f == pytest.approx(58.0, abs=1e-6)  # bias = forecast - observed is subtracted


def test_confidence_drops_with_stale_data_and_disagreement() -> None:
    agree = {"a": normal_members(1, 31), "b": normal_members(2, 51)}
    disagree = {"a": normal_members(1, 31, mu=56.0), "b": normal_members(2, 51, mu=64.0)}
    fresh = bracket_probabilities(agree, ladder(), lead_hours=24.0).confidence
    ages = [bracket_probabilities(agree, ladder(), lead_hours=24.0, data_age_hours=a).confidence
            for a in (0.0, 3.0, 6.0, 12.0, 24.0, 48.0)]
    assert ages[0] == fresh
    assert all(a > b for a, b in pairwise(ages))
    assert max(a - b for a, b in pairwise(ages)) < 0.3  # smooth, no cliff
    assert ages[-1] < 0.2 * fresh
    split = bracket_probabilities(disagree, ladder(), lead_hours=24.0).confidence
    assert split < 0.5 * fresh
    few = bracket_probabilities({"a": normal_members(1, 5)}, ladder(), lead_hours=24.0).confidence
    assert few < fresh
    assert 0.0 <= split <= 1.0


def test_weights_nans_and_missing_models() -> None:
    a = normal_members(1, 20, mu=58.0)
    b = np.append(normal_members(2, 20, mu=62.0), [np.nan, np.nan])
    equal = bracket_probabilities({"a": a, "b": b}, ladder(), lead_hours=0.0, tail_weight=0.0)
    only_b = bracket_probabilities({"a": a, "b": b}, ladder(), lead_hours=0.0, weights={"b": 1.0}, tail_weight=0.0)
    tilted = bracket_probabilities({"a": a, "b": b}, ladder(), lead_hours=0.0, weights={"a": 1.0, "b": 3.0},
                                   tail_weight=0.0)
    assert equal.n_members == 40 and only_b.models_used == ("b",)
    assert equal.mean_f < tilted.mean_f < only_b.mean_f
    with pytest.raises(WeatherModelError):
        bracket_probabilities({"a": np.array([np.nan])}, ladder(), lead_hours=0.0)


def test_overlapping_ladder_is_rejected_and_a_gap_shows_in_coverage() -> None:
    with pytest.raises(LadderError):
        bracket_probabilities({"m": normal_members(1)}, [*ladder(), Bracket("X", "between", floor=60, cap=61)],
                              lead_hours=0.0)
    gappy = [b for b in ladder() if b.ticker != "B59.5"]
    r = bracket_probabilities({"m": normal_members(1)}, gappy, lead_hours=0.0)
    assert r.coverage < 0.8
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-12)


def test_fit_station_bias_shrinks_towards_zero() -> None:
    assert fit_station_bias(np.array([]), np.array([])) == 0.0
    f = np.full(10, 62.0)
    o = np.full(10, 60.0)
    assert fit_station_bias(f, o, prior_n=10) == pytest.approx(1.0)  # 20 / (10 + 10)
    assert fit_station_bias(f, o, prior_n=0) == pytest.approx(2.0)
    many = fit_station_bias(np.full(1000, 62.0), np.full(1000, 60.0))
    assert many == pytest.approx(2000 / 1010)
    with_nan = fit_station_bias(np.array([62.0, np.nan, 61.0]), np.array([60.0, 60.0, np.nan]), prior_n=1)
    assert with_nan == pytest.approx(1.0)  # one valid pair: 2 / (1 + 1)


# -- the rest of the day (remaining=True) ------------------------------------------------------------------


def by_degree(r: WeatherForecastResult, lo: int, hi: int) -> dict[int, float]:
    return {int(k): float(p) for k, p in zip(r.support, r.pmf, strict=True) if lo <= k <= hi}


def test_after_the_peak_the_mass_collects_on_the_observed_max_without_a_late_rise() -> None:
    """The old model truncated a daily distribution at the observed max and still expected ~1.5 °F more at
    16:00; conditioning on the remaining hours, members whose rest of the day stays below the observation put
    the settlement on it (or one degree above with `past_excess_p`), nothing higher."""
    below = {"m": normal_members(4, mu=57.0, sd=0.8)}  # the members' max over the hours left: 5 °F below
    r = bracket_probabilities(below, ladder(), lead_hours=6.0, observed_max_f=62.0, remaining=True, min_sd_f=0.5)
    pmf = by_degree(r, 55, 70)
    assert pmf[62] > 0.999 and r.mean_f == pytest.approx(62.0, abs=0.01)
    r = bracket_probabilities(below, ladder(), lead_hours=6.0, observed_max_f=62.0, remaining=True, min_sd_f=0.5,
                              past_excess_p=0.3)
    pmf = by_degree(r, 55, 70)
    assert pmf[62] == pytest.approx(0.7, abs=1e-3) and pmf[63] == pytest.approx(0.3, abs=1e-3)
    assert sum(p for k, p in pmf.items() if k < 62 or k > 63) < 1e-3  # only the 2 % wide tail


def test_when_the_rest_of_the_day_is_warmer_the_members_decide_not_the_observation() -> None:
    warmer = {"m": normal_members(5, mu=66.0, sd=1.0)}
    r = bracket_probabilities(warmer, ladder(), lead_hours=6.0, observed_max_f=60.0, remaining=True, min_sd_f=0.5,
                              tail_weight=0.0)
    assert by_degree(r, 60, 60).get(60, 0.0) < 1e-6
    assert r.mean_f == pytest.approx(66.0, abs=0.3)


def test_no_hours_left_means_the_observed_floor() -> None:
    r = bracket_probabilities({"m": np.empty(0)}, ladder(), lead_hours=0.0, observed_max_f=61.0, remaining=True,
                              past_excess_p=0.0)
    assert r.probabilities["B61.5"] == pytest.approx(1.0)


def test_remaining_maxima_takes_the_hours_left_and_the_nowcast_shift() -> None:
    # Two members, hourly from epoch hour 100: a warm morning then cooling.
    traces = {"m": np.array([[50, 55, 60, 58, 54, 50], [52, 56, 59, 57, 53, 49]], dtype=float)}
    plain = {"path_scale": 1.0, "micro_sd_f": 0.0}  # the hourly levels themselves, no 5-minute wander
    rest = remaining_maxima(100.0, traces, day_start_h=100.0, day_end_h=106.0, now_h=103.0, **plain)
    assert rest["m"].tolist() == [58.0, 57.0]  # hours 103..105 only
    # The observation at hour 103 is 2 °F above member 0 and 3 above member 1: each is lifted at that hour.
    shifted = remaining_maxima(100.0, traces, day_start_h=100.0, day_end_h=106.0, now_h=103.0, obs=[(103.0, 60.0)],
                               nowcast_timescale_h=30.0, **plain)
    assert shifted["m"].tolist() == pytest.approx([60.0, 60.0])
    assert remaining_maxima(100.0, traces, day_start_h=100.0, day_end_h=106.0, now_h=106.0)["m"].size == 0


def test_remaining_maxima_lifts_a_peak_still_to_come_more_than_one_that_has_passed() -> None:
    """The CLI max is the largest 5-minute value: a level that stays at its top for the rest of the day gives
    the wander many chances to exceed it, one that falls away from now on only the first few. The old model
    took the hourly maximum and added one constant offset for both (shrunk by a clock rule)."""
    hours = np.arange(7)
    traces = {"flat": np.full((1, 7), 60.0), "falling": (60.0 - 2.0 * hours)[None, :].astype(float)}
    rest = remaining_maxima(100.0, traces, day_start_h=100.0, day_end_h=106.0, now_h=100.0)  # one member a model
    flat, falling = float(rest["flat"][0]) - 60.0, float(rest["falling"][0]) - 60.0
    assert 0.7 < flat < 1.0  # E[max of 72 N(0, 0.35²)] ≈ 0.35 x 2.4
    assert 0.0 < falling < 0.35 < flat
    # Two 5-minute values at one level: E[max] = level + sd / sqrt(pi), exactly.
    two = remaining_maxima(100.0, {"m": np.full((1, 2), 50.0)}, day_start_h=100.0, day_end_h=100.1, now_h=100.0)
    assert float(two["m"][0]) == pytest.approx(50.0 + 0.35 / math.sqrt(math.pi), abs=1e-4)


def test_remaining_maxima_widens_the_paths_and_covers_what_came_after_the_latest_report() -> None:
    # Two members 1 °F either side of their mean: path_scale 1.5 puts them 1.5 °F either side.
    traces = {"m": np.array([[59.0, 59.0, 59.0], [61.0, 61.0, 61.0]])}
    wide = remaining_maxima(100.0, traces, day_start_h=100.0, day_end_h=103.0, now_h=100.0, path_scale=1.5,
                            micro_sd_f=0.0)
    assert wide["m"].tolist() == pytest.approx([58.5, 61.5])
    # A peak at hour 101 that the 100:51 report did not see is still part of the rest at 102:00.
    peak = {"m": np.array([[58.0, 62.0, 57.0, 55.0]])}
    rest = remaining_maxima(100.0, peak, day_start_h=100.0, day_end_h=104.0, now_h=102.0,
                            obs=[(100.85, 61.4)], path_scale=1.0, micro_sd_f=0.0)
    assert float(rest["m"][0]) == pytest.approx(62.0, abs=0.1)  # on the 5-minute grid; hours >= now alone: 57


def test_afternoon_after_the_peak_expects_no_more_warming_than_the_remaining_hours_can_give() -> None:
    """16:00, the peak has passed: every member is at 60 °F now and falls 2 °F an hour to the end of the day, so
    the rest of the day can only add the wander of its first few 5-minute values. Priced the way the signals
    pipeline prices it (remaining_maxima, then bracket_probabilities with the fitted WeatherParams and its peak
    offset rule), the expected settlement stays within that. The old model lifted every member by one clock-rule
    offset (0.7 °F x 8/10 h = 0.56 °F), peak passed or not."""
    prm = WeatherParams()
    hours = np.arange(9)  # 16:00 .. 24:00 local as epoch hours 116 ..
    rng = np.random.default_rng(3)
    traces = {"m": (60.0 - 2.0 * hours)[None, :] + rng.normal(0.0, 0.1, (30, 1))}
    rest = remaining_maxima(116.0, traces, day_start_h=100.0, day_end_h=124.0, now_h=116.0,
                            nowcast_timescale_h=prm.nowcast_timescale_h)
    hours_left = 8.0
    offset = prm.peak_offset_f * (min(1.0, hours_left / prm.peak_offset_hours) if prm.peak_offset_hours > 0 else 1.0)
    r = bracket_probabilities(rest, ladder(55, 66), remaining=True, spread_scale=prm.spread_scale,
                              peak_offset_f=offset, min_sd_f=prm.min_sd_f, lead_sd_f_per_day=prm.lead_sd_f_per_day,
                              tail_weight=0.0, lead_hours=hours_left, observed_max_f=50.0, past_excess_p=0.0)
    assert 60.0 < r.mean_f < 60.35  # at most what a falling path's first 5-minute values can add
    # A day that is still rising to a flat top for the rest of the afternoon gets the larger lift.
    flat = {"m": np.full((30, 9), 60.0) + rng.normal(0.0, 0.1, (30, 1))}
    r_flat = bracket_probabilities(remaining_maxima(116.0, flat, day_start_h=100.0, day_end_h=124.0, now_h=116.0),
                                   ladder(55, 66), remaining=True, spread_scale=prm.spread_scale,
                                   peak_offset_f=offset, min_sd_f=prm.min_sd_f, tail_weight=0.0,
                                   lead_sd_f_per_day=prm.lead_sd_f_per_day, lead_hours=hours_left,
                                   observed_max_f=50.0, past_excess_p=0.0)
    assert r_flat.mean_f > r.mean_f + 0.4


def test_excess_probability_grows_with_readings_at_the_top_and_with_the_wander() -> None:
    assert excess_probability([], 0.3) == ()
    one = excess_probability([60, 61, 62, 61], 0.3)[0]
    three = excess_probability([60, 62, 62, 62, 61], 0.3)[0]
    assert 0 < one < three < 1
    assert excess_probability([60, 62, 62, 62, 61], 0.1)[0] < three
    # Reports far below the top and away from it change nothing.
    assert excess_probability([40, 50, 58, 62, 61], 0.3) == pytest.approx(excess_probability([45, 50, 58, 62, 61], 0.3),
                                                                          abs=1e-4)
    tail = excess_probability([58, 60, 62, 62, 61, 59], 0.35)
    assert len(tail) >= 2 and all(a >= b > 0 for a, b in pairwise(tail))


def test_excess_probability_sees_a_maximum_at_midnight_before_the_first_report() -> None:
    """A day whose reports start by falling 4 °F an hour was warmer before its first report (00:51): the CLI max
    is likely a degree or more above the largest report (the old model, a flat hour, allowed one degree at
    most, and rarely)."""
    tail = excess_probability([60, 56, 52, 49, 47], 0.35)
    assert tail[0] > 0.9 and tail[1] > 0.3
    steady = excess_probability([60, 60, 59, 58, 57], 0.35)
    assert steady[0] < tail[0] and steady[1] < tail[1] / 4


def test_the_past_excess_spreads_over_several_degrees_and_moves_with_the_rest() -> None:
    below = {"m": normal_members(4, mu=50.0, sd=0.8)}  # the rest of the day cannot matter
    r = bracket_probabilities(below, ladder(), lead_hours=6.0, observed_max_f=60.0, remaining=True, min_sd_f=0.45,
                              past_excess_p=(0.6, 0.25, 0.05), tail_weight=0.0)
    pmf = by_degree(r, 55, 70)
    assert [pmf[60], pmf[61], pmf[62], pmf[63]] == pytest.approx([0.4, 0.35, 0.2, 0.05], abs=1e-3)
    with pytest.raises(WeatherModelError, match="non-increasing"):
        bracket_probabilities(below, ladder(), lead_hours=6.0, observed_max_f=60.0, remaining=True,
                              past_excess_p=(0.2, 0.5))
    # A rest anchored at the top: the report's error moves both, so "nothing more" is likelier than if the past's
    # excess and the rest were independent (the old product); without a rest (above) the excess is as given.
    near = {"m": normal_members(5, mu=59.6, sd=0.3)}
    kw = {"lead_hours": 2.0, "observed_max_f": 60.0, "remaining": True, "min_sd_f": 0.45, "past_excess_p": 0.5,
          "tail_weight": 0.0}
    coupled = by_degree(bracket_probabilities(near, ladder(), **kw), 60, 60)[60]
    independent = by_degree(bracket_probabilities(near, ladder(), excess_level_corr=0.0, **kw), 60, 60)[60]
    assert coupled > independent + 0.01
