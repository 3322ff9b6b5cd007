"""Daily-high temperature model: ensemble members -> whole-°F pmf -> Kalshi bracket probabilities (ref E1).

Pure functions of arrays: no I/O, no clock. Temperatures are floats in °F; hours are floats.

The pipeline, and why each step is there:
1. Bias: every member is shifted by `-bias_f` (E1.5; `fit_station_bias` gives a shrunk per-station value).
2. Kernel dressing (E1.2): each member becomes a Gaussian of sd σ_k. The kernel is Gaussian, not Student-t,
   so the model reproduces a Gaussian truth (tested); the fat tails E1.5 warns about come from an explicit
   contamination component instead: with weight `tail_weight` (default 2%) a wide Gaussian centred on the
   mixture mean with `tail_scale` (2.5) x the mixture sd, so no bracket is ever priced as "impossible" by an
   over-sharp ensemble.
3. Kernel width: Silverman's rule on the pooled (weighted) ensemble, h² = (4 / (3 K_eff))^0.4 (E1.2),
   K_eff = 1 / Σ w_i² the effective member count, s² the weighted pooled variance (it includes the spread
   between models, as in BMA, E1.4). Dressing alone would inflate the variance to s²(1 + h²) (+15% at 150
   members), so it is variance-corrected (Silverman 1986 §6.4.1): members are pulled towards the mean by
   1/sqrt(1 + h²) and the smoothing kernel is σ_s = h·s/sqrt(1 + h²); the mixture then keeps variance s².
   Ensembles are under-dispersive and more so at longer lead, so the kernel is inflated in quadrature with an
   explicit lead-time term and floored:
       σ_k = max(min_sd_f, sqrt(σ_s² + (lead_sd_f_per_day · lead_hours / 24)²))
   (with the rest of the day, step 6, min_sd_f is the latest report's error every member shares, and it adds in
   quadrature instead: σ_k² = min_sd_f² + σ_s² + lead term²).
   lead_hours is the time from the ensemble run's initialisation to the end of the target climate day.
   The default 0.6 °F per day of lead is an uncalibrated placeholder; fit it (with bias and tail weight) by
   CRPS on resolved days (E1.3) and pass the fitted values.
4. Rounding (E1.7): settlement is a whole °F, so P(n) = F(n + 0.5) - F(n - 0.5); brackets sum those.
5. Observed max so far (E1.8): the final continuous max X cannot be below it, so the distribution is truncated
   at the observed value and renormalised. Whole degrees below round(observed) (half up) become impossible;
   for a whole-degree observation that is exactly "below ceil(observed)". Late in the climate day the
   remaining rise above the observed max shrinks: X' = obs + g · (X - obs), g = clip(hours_left / 12, 0, 1),
   i.e. no tightening with 12 h or more left, a point mass at the observed max at the end of the day, and
   monotone in between. 12 h (noon LST) is a placeholder to fit on observation history. Without an observed
   max, hours_left_in_day is ignored.
6. The rest of the day (preferred, `remaining=True`, when the run carries hourly member traces). The CLI max
   S is the largest 5-minute value of the climate day, so it is max(past, rest): `past` the values up to the
   latest hourly report, `rest` those after it (including the few already gone by but not reported).
   - rest (`remaining_maxima`): each member is nowcast-corrected — shifted by the latest observation's error
     against it, decaying with `nowcast_timescale_h` (forecast errors persist for about a day) — interpolated
     to 5 minutes over the values still unknown, its deviation from its model's mean path widened by
     `path_scale` (under-dispersion is a property of the paths: widening them lifts the maxima of the wider
     ones too), and reduced to its *expected 5-minute maximum* given the instrument wander `micro_sd_f`. That
     is what lets the rest shrink with the hours left without a clock rule: a member still rising to its peak
     keeps many values near its top and gets a large lift; once its peak has passed, only the first values
     are near the top and the lift is small; with no values left there is no rest at all.
   - past (`excess_probability`): the largest report, or k degrees more with the k-th entry of
     `past_excess_p`, from a chain over the day's reports (the 5-minute values they do not show).
   - combined: P(S < t) = E_e[P(past < t | e) · F_rest(t - e)], e the latest report's error shared by every
     member (sd `min_sd_f`: whole-degree rounding plus the wander, ≈ 0.45 °F), which moves the past's excess
     too (correlation `excess_level_corr`: when the top is recent, a report that read low means both the
     unseen values around it and the values to come are higher). No truncate-and-renormalise: once the peak
     has passed, the members' remaining maxima sit below the observed max and the mass collects on it.
   `spread_scale` widens the remaining maxima about their mean and `peak_offset_f` lifts them all (both 1 / 0
   once the paths carry the 5-minute peak). `WeatherParams` holds the values fitted on simulated days under
   the sim's honest truth (benchmarks/fit_weather.py); the resolver can refit them on real resolved days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import NormalDist
from typing import Literal

import numpy as np

StrikeType = Literal["less", "between", "greater", "greater_or_equal", "less_or_equal"]

_STRIKE_TYPES = frozenset({"less", "between", "greater", "greater_or_equal", "less_or_equal"})
_SQRT2 = math.sqrt(2.0)

# Step 5: hours before the end of the climate day from which the remaining rise starts to shrink.
TIGHTEN_HOURS = 12.0
# Confidence: members at which the count factor reaches 1/2; data age (h) at which the age factor reaches 1/2.
_CONF_MEMBERS_HALF = 10.0
_CONF_AGE_HALF_H = 18.0
# Pmf support: this many of the widest component's sd beyond the extreme centres carries < 1e-15 of mass.
_SUPPORT_SDS = 8.0
# Below this much forecast mass above the observed max, the forecast is treated as wrong: all mass at the obs.
_MIN_TAIL_MASS = 1e-12
# excess_probability: grid points for the level under one hourly report.
_LEVEL_GRID = 24
# excess_probability: sd (°F) of the level's hour-to-hour change, a weak prior (slopes reach ~3 °F/h).
LEVEL_STEP_SD_F = 2.2
# excess_probability: degrees above the top it looks at, and the probability below which it stops.
_MAX_EXCESS_DEGREES = 8
_MIN_EXCESS_P = 1e-4
# excess_probability: share of the first hour's trend that continues backwards to midnight (a damped trend: the
# slope of two noisy reports overshoots; 0.5 fits the honest sim days best, 0.75 would be unbiased on average).
_BACK_TREND = 0.5
# Correlation of the past's excess with the error of the latest report the rest of the day is anchored on (step
# 6; 0.5-0.8 fit equally well), and the Gauss-Hermite rule that integrates over that error.
EXCESS_LEVEL_CORR = 0.8
_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(15)
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / _HERMITE_WEIGHTS.sum()
# The CLI max is the largest 5-minute value: the step of the values between hourly reports (h).
_SLOT_H = 5.0 / 60.0


@dataclass(frozen=True, slots=True)
class WeatherParams:
    """The model's tunable parameters. The defaults are a grid fit on honest sim days (benchmarks/fit_weather.py:
    mean |p - p_ideal|, which in expectation is minimising Brier); the resolver can refit them on real days."""

    lead_sd_f_per_day: float = 0.75  # kernel widening per day from now to the end of the climate day
    min_sd_f: float = 0.45  # kernel floor; with the rest of the day, the latest report's error (in quadrature)
    tail_weight: float = 0.02
    tail_scale: float = 2.5
    spread_scale: float = 1.0  # widens the members' remaining maxima (path_scale already widened their paths)
    peak_offset_f: float = 0.0  # added to every member's maximum (0: remaining_maxima gives the 5-minute peak)
    peak_offset_hours: float = 10.0  # the offset shrinks linearly once fewer hours than this are left (0: never)
    past_excess_p: float = 0.3  # P(CLI max > largest hourly report) when the day's reports are unknown
    nowcast_timescale_h: float = 30.0  # how long an observed forecast error persists
    micro_sd_f: float = 0.35  # the 5-minute wander around the hourly level (excess_probability, remaining_maxima)
    path_scale: float = 1.3  # widens member paths about their model's mean (ensembles are under-dispersive)
    nowcast_obs: int = 1  # observations the nowcast shift averages (older ones predate the run: 1 fits best)


_FITTED = WeatherParams()


def excess_probability(readings: list[float], micro_sd_f: float, unseen_per_hour: int = 11,
                       step_sd_f: float = LEVEL_STEP_SD_F) -> tuple[float, ...]:
    """P(the CLI max is k or more degrees above the largest hourly reading so far), k = 1, 2, ..., from the
    day's whole-°F hourly readings, oldest first; the tuple ends where the next value would be negligible.

    The CLI max is the largest 5-minute value; each hour has `unseen_per_hour` values the hourly report does not
    show. A report is itself one 5-minute value, rounded: the level under it lies within its whole degree less
    that value's own wander (`micro_sd_f`), so a report at the top may have been a high draw. From one report to
    the next the level moves linearly (a 62 after a 58 means the values just before it were lower; the values
    before the first report continue part of its first hour's trend backwards, `_BACK_TREND`, so a day that
    starts by falling fast had its maximum at midnight, degrees above its first report), the hour-to-hour change
    of the level has a weak N(0, step_sd_f²) prior, and every unseen value wanders by `micro_sd_f` about the
    level. The levels are integrated on a grid, report by report (a chain: neighbouring hours share a report),
    so the answer is deterministic. The values after the newest report are the rest of the day (remaining_maxima)."""
    if not readings or micro_sd_f <= 0:
        return ()
    y = np.asarray(readings, dtype=float)
    top = float(y.max())
    # The level under a report, as an offset from it: its whole degree convolved with the value's own wander.
    reach = 0.5 + 4.0 * micro_sd_f
    delta = np.linspace(-reach, reach, _LEVEL_GRID)
    like = _phi_fast((0.5 - delta) / micro_sd_f) - _phi_fast((-0.5 - delta) / micro_sd_f)
    frac = np.arange(1, unseen_per_hour + 1) / (unseen_per_hour + 1.0)
    flat = np.ones((delta.size, delta.size))
    moves = [np.exp(-0.5 * (((b + delta)[None, :] - (a + delta)[:, None]) / step_sd_f) ** 2) if step_sd_f > 0
             else flat for a, b in pairwise(y)]  # the prior on the level's change, [level at a, level at b]
    # The values between two reports (and, for the first hour, before the first), at [level at a, level at b].
    unseen = []
    for i, (a, b) in enumerate(pairwise(y)):
        la, lb = (a + delta)[:, None, None], (b + delta)[None, :, None]
        between = la + (lb - la) * frac
        if i == 0:
            between = np.concatenate([la - _BACK_TREND * (lb - la) * frac[: unseen_per_hour - 1], between], axis=2)
        unseen.append(between)
    first = np.repeat((y[0] + delta)[:, None], unseen_per_hour - 1, axis=1) if y.size == 1 else None

    def below(threshold: float) -> float:
        """P(no unseen value reaches `threshold`): forward passes with and without that condition."""
        quiet, total = like.copy(), like.copy()
        if first is not None:
            quiet = quiet * np.prod(_phi_fast((threshold - first) / micro_sd_f), axis=-1)
        for move, values in zip(moves, unseen, strict=True):
            stay = move
            if float(values.max()) + 8.0 * micro_sd_f >= threshold:  # else no unseen value gets there
                stay = move * np.prod(_phi_fast((threshold - values) / micro_sd_f), axis=-1)
            quiet, total = (quiet @ stay) * like, (total @ move) * like
            norm = total.sum()
            quiet, total = quiet / norm, total / norm
        return float(quiet.sum() / total.sum())

    tail: list[float] = []
    for k in range(1, _MAX_EXCESS_DEGREES + 1):
        p = min(1.0, max(0.0, 1.0 - below(top + k - 0.5)))
        if p < _MIN_EXCESS_P:
            break
        tail.append(min(p, tail[-1]) if tail else p)
    return tuple(tail)


def remaining_maxima(trace_start_h: float, traces: dict[str, np.ndarray], *, day_start_h: float, day_end_h: float,
                     now_h: float, obs: list[tuple[float, float]] | None = None,
                     nowcast_timescale_h: float = 30.0, path_scale: float | None = None,
                     micro_sd_f: float | None = None) -> dict[str, np.ndarray]:
    """Each member's expected maximum over the 5-minute values of the climate day not yet reported (step 6).

    `traces` maps a model to its (n_members x n_hours) hourly values from epoch hour `trace_start_h`; `obs` are
    the latest observations, (epoch hour, °F), newest last: each member is shifted by the observations minus its
    own values at their times (averaged: one whole-°F report is noisy), the shift decaying from the newest as
    exp(-(t - t_obs) / nowcast_timescale_h). Hours are UTC epoch hours.

    The values still unknown start one 5-minute step after the newest observation (those between it and `now`
    are past but unreported) or at `now`, whichever is earlier, and end with the climate day. On them each member
    is interpolated from its hourly values; its deviations from its model's mean path are widened by
    `path_scale` (ensembles are under-dispersive: widening the paths, not the maxima, also lifts the maxima of
    wider paths); and every 5-minute value wanders by `micro_sd_f` about that level, so the member's expected
    maximum is above its hourly maximum by more where the level stays near its top for long (a peak still to
    come) than where it falls away (the peak has passed). None takes the fitted `WeatherParams` value. A model
    whose traces do not reach the day is left out; no value left to come gives an empty array per model."""
    scale = _FITTED.path_scale if path_scale is None else path_scale
    micro = _FITTED.micro_sd_f if micro_sd_f is None else micro_sd_f
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(micro) and micro >= 0):
        raise WeatherModelError(f"path_scale must be > 0 and micro_sd_f >= 0, got {path_scale!r}, {micro_sd_f!r}")
    out: dict[str, np.ndarray] = {}
    for model, arr in traces.items():
        vals = np.atleast_2d(np.asarray(arr, dtype=float))
        hours = trace_start_h + np.arange(vals.shape[1])
        if hours.size == 0 or hours[-1] < day_start_h or hours[0] >= day_end_h:
            continue
        usable = [(h, f) for h, f in (obs or []) if hours[0] <= h <= hours[-1]]
        if usable and nowcast_timescale_h > 0:
            t_obs = np.array([h for h, _ in usable])
            at_obs = np.stack([np.interp(t_obs, hours, row) for row in vals])  # members x observations
            delta = (np.array([f for _, f in usable])[None, :] - at_obs).mean(axis=1)
            decay = np.exp(-np.clip(hours - t_obs[-1], 0.0, None) / nowcast_timescale_h)
            vals = vals + delta[:, None] * decay[None, :]
        start = max(day_start_h, now_h)
        if usable:
            start = max(day_start_h, min(start, usable[-1][0] + _SLOT_H))
        slots = np.arange(start, min(day_end_h, hours[-1] + 1e-9), _SLOT_H)
        if slots.size == 0:
            out[model] = np.empty(0)
            continue
        levels = np.stack([np.interp(slots, hours, row) for row in vals])  # members x 5-minute values
        if scale != 1.0:
            mean_path = levels.mean(axis=0)
            levels = mean_path + scale * (levels - mean_path)
        out[model] = _expected_max(levels, micro)
    return out


def _expected_max(levels: np.ndarray, sd: float) -> np.ndarray:
    """E[max_j (levels[i, j] + e_ij)] per row, e_ij independent N(0, sd²): E[X] = a + ∫_a^∞ (1 - F) dt."""
    top = levels.max(axis=1)
    if sd <= 0 or not np.isfinite(top).all():
        return top
    # Values more than 4 sd below a row's maximum hardly ever become its maximum: keep each row's top few.
    k = max(1, int((levels > (top[:, None] - 4.0 * sd)).sum(axis=1).max()))
    near = -np.partition(-levels, k - 1, axis=1)[:, :k] if k < levels.shape[1] else levels
    grid = np.linspace(-4.0, 6.0, 41) * sd  # t - top: below, F < 4e-5; above, 1 - F < 1e-9 per value
    z = (top[:, None, None] + grid[None, None, :] - near[:, :, None]) / sd
    above = 1.0 - np.prod(_phi_fast(np.minimum(z, 9.0)), axis=1)  # P(max >= top + grid), rows x grid
    return top + grid[0] + np.sum(0.5 * (above[:, 1:] + above[:, :-1]) * np.diff(grid)[None, :], axis=1)


class WeatherModelError(ValueError):
    """Inputs the weather model cannot turn into a distribution (no members, bad brackets, bad parameters)."""


class LadderError(WeatherModelError):
    """Brackets that cannot belong to one event: overlapping ranges or an unknown strike type."""


@dataclass(frozen=True, slots=True)
class Bracket:
    """One Kalshi market of a daily-high event, with its strike fields as in the API (kalshi_api.md §8)."""

    ticker: str
    strike_type: StrikeType
    floor: float | None = None
    cap: float | None = None

    def integer_range(self) -> tuple[float, float]:
        """Return the whole-°F outcomes [lo, hi] this market pays on (±inf for open tails; lo > hi if empty)."""
        # §8: greater -> value > floor; less -> value < cap; between -> floor <= value <= cap inclusive.
        st, lo_s, hi_s = self.strike_type, self.floor, self.cap
        if st not in _STRIKE_TYPES:
            raise LadderError(
                f"market {self.ticker}: unknown strike_type {st!r}; expected one of {sorted(_STRIKE_TYPES)}"
            )
        need_floor = st in ("greater", "greater_or_equal", "between")
        need_cap = st in ("less", "less_or_equal", "between")
        if need_floor and (lo_s is None or not math.isfinite(lo_s)):
            raise LadderError(f"market {self.ticker}: strike_type {st!r} needs a finite floor_strike, got {lo_s!r}")
        if need_cap and (hi_s is None or not math.isfinite(hi_s)):
            raise LadderError(f"market {self.ticker}: strike_type {st!r} needs a finite cap_strike, got {hi_s!r}")
        lo = -math.inf
        hi = math.inf
        if st == "greater":
            lo = math.floor(lo_s) + 1.0
        elif st in ("greater_or_equal", "between"):
            lo = float(math.ceil(lo_s))
        if st == "less":
            hi = math.ceil(hi_s) - 1.0
        elif st in ("less_or_equal", "between"):
            hi = float(math.floor(hi_s))
        return lo, hi


@dataclass(frozen=True, slots=True, eq=False)
class WeatherForecastResult:
    """A daily-high forecast: bracket probabilities (summing to 1), the whole-°F pmf and diagnostics."""

    probabilities: dict[str, float]
    """P(YES) per bracket ticker, normalised over the ladder."""
    support: np.ndarray
    """Whole °F values (int64, ascending) the pmf is given on."""
    pmf: np.ndarray
    """P(settlement = support[i]); sums to 1."""
    mean_f: float
    sd_f: float
    kernel_sd_f: float
    confidence: float
    coverage: float
    """Mass the ladder held before normalisation: < 1 means a market of the event is missing (a gap)."""
    n_members: int
    models_used: tuple[str, ...]
    min_possible_f: int | None
    """Lowest settlement still possible given the observed max (None without an observation)."""
    extras: dict[str, float] = field(default_factory=dict)
    """Confidence factors (members, agreement, age) and the tightening factor, for logs and storage."""


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, elementwise, exact to double precision (math.erfc; numpy has no erf)."""
    flat = np.asarray(x, dtype=float).ravel()
    out = np.fromiter(map(math.erfc, (-flat / _SQRT2).tolist()), dtype=float, count=flat.size)
    return (0.5 * out).reshape(np.shape(x))


def _phi_fast(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorised (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): for large grids."""
    x = np.asarray(x, dtype=float)
    z = np.abs(x) / _SQRT2
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return 0.5 * (1.0 + np.sign(x) * (1.0 - poly * np.exp(-z * z)))


def _pool(
    members: dict[str, np.ndarray], weights: dict[str, float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Return (values, per-member weights, model means, model weights, models) with NaNs and empty models dropped."""
    vals: list[np.ndarray] = []
    wts: list[np.ndarray] = []
    means: list[float] = []
    mweights: list[float] = []
    used: list[str] = []
    for name, arr in members.items():
        x = np.asarray(arr, dtype=float).ravel()
        x = x[np.isfinite(x)]
        # Default: equal weight per model; a model absent from explicit weights is not used.
        w = 1.0 if weights is None else float(weights.get(name, 0.0))
        if not math.isfinite(w) or w < 0:
            raise WeatherModelError(f"model weight for {name!r} must be a finite number >= 0, got {w!r}")
        if x.size == 0 or w == 0:
            continue
        vals.append(x)
        wts.append(np.full(x.size, w / x.size))  # members equal within a model
        means.append(float(x.mean()))
        mweights.append(w)
        used.append(name)
    if not vals:
        raise WeatherModelError("no usable ensemble members: every model is empty, all-NaN or has zero weight")
    total = sum(mweights)
    return (
        np.concatenate(vals),
        np.concatenate(wts) / total,
        np.asarray(means),
        np.asarray(mweights) / total,
        tuple(used),
    )


def bracket_probabilities(
    members: dict[str, np.ndarray],
    brackets: list[Bracket],
    *,
    weights: dict[str, float] | None = None,
    bias_f: float = 0.0,
    lead_hours: float,
    observed_max_f: float | None = None,
    hours_left_in_day: float | None = None,
    min_sd_f: float = 1.0,
    data_age_hours: float = 0.0,
    lead_sd_f_per_day: float = 0.6,
    tail_weight: float = 0.02,
    tail_scale: float = 2.5,
    remaining: bool = False,
    spread_scale: float = 1.0,
    peak_offset_f: float = 0.0,
    past_excess_p: float | tuple[float, ...] = 0.0,
    excess_level_corr: float = EXCESS_LEVEL_CORR,
) -> WeatherForecastResult:
    """Turn ensemble daily maxima (°F per model) into P(YES) for each bracket of one event (ref E1)."""
    for name, v in (("lead_hours", lead_hours), ("min_sd_f", min_sd_f), ("data_age_hours", data_age_hours),
                    ("lead_sd_f_per_day", lead_sd_f_per_day)):
        if not math.isfinite(v) or v < 0:
            raise WeatherModelError(f"{name} must be a finite number >= 0, got {v!r}")
    if not math.isfinite(bias_f):
        raise WeatherModelError(f"bias_f must be finite, got {bias_f!r}")
    if not 0.0 <= tail_weight < 1.0 or not tail_scale > 0:
        raise WeatherModelError(
            f"tail_weight must be in [0, 1) and tail_scale > 0, got {tail_weight!r}, {tail_scale!r}"
        )
    if observed_max_f is not None and not math.isfinite(observed_max_f):
        raise WeatherModelError(f"observed_max_f must be finite or None, got {observed_max_f!r}")
    if hours_left_in_day is not None and not (math.isfinite(hours_left_in_day) and hours_left_in_day >= 0):
        raise WeatherModelError(f"hours_left_in_day must be a finite number >= 0 or None, got {hours_left_in_day!r}")
    if not brackets:
        raise LadderError("no brackets: an event needs at least one market")
    excess = (float(past_excess_p),) if np.ndim(past_excess_p) == 0 else tuple(float(p) for p in past_excess_p)
    if not (spread_scale > 0 and math.isfinite(peak_offset_f) and all(0.0 <= p <= 1.0 for p in excess)
            and all(a >= b for a, b in pairwise(excess)) and 0.0 <= excess_level_corr < 1.0):
        raise WeatherModelError(f"spread_scale must be > 0, peak_offset_f finite, past_excess_p in [0, 1] (a tuple: "
                                f"non-increasing) and excess_level_corr in [0, 1), got {spread_scale!r}, "
                                f"{peak_offset_f!r}, {past_excess_p!r}, {excess_level_corr!r}")
    if remaining and observed_max_f is not None and not any(np.asarray(v).size for v in members.values()):
        # Nothing of the day is left to come: the settlement is the observed floor (or one more, see step 6).
        members = {"observed": np.array([observed_max_f - 50.0])}

    ranges = [b.integer_range() for b in brackets]
    order = sorted(range(len(brackets)), key=lambda i: ranges[i][0])
    prev_hi, prev_t = -math.inf, None
    for i in order:
        lo, hi = ranges[i]
        if lo > hi:
            continue  # an empty market (no whole degree satisfies it) takes no mass
        if prev_t is not None and lo <= prev_hi:
            raise LadderError(
                f"markets {prev_t} and {brackets[i].ticker} overlap: brackets of one event must not share "
                "a whole degree; were markets of two events mixed?"
            )
        prev_hi, prev_t = hi, brackets[i].ticker

    x, w, model_means, model_w, used = _pool(members, weights)
    debiased = x - bias_f + (peak_offset_f if remaining else 0.0)  # E1.5: bias = forecast - observed
    mean_c = float(w @ debiased)
    debiased = mean_c + spread_scale * (debiased - mean_c)
    s2 = float(w @ (debiased - mean_c) ** 2)
    k_eff = 1.0 / float(w @ w)
    h2 = (4.0 / (3.0 * k_eff)) ** 0.4  # E1.2 Silverman factor: kernel variance = h2 x ensemble variance
    # Variance-corrected dressing (Silverman 1986 §6.4.1): pull members towards the mean by 1/sqrt(1 + h2) so
    # that smoothing alone keeps the ensemble variance; every widening is then one of the explicit terms below.
    shrink = 1.0 / math.sqrt(1.0 + h2)
    centres = mean_c + shrink * (debiased - mean_c)
    smooth_sd = math.sqrt(h2 * s2) * shrink
    lead_sd = lead_sd_f_per_day * lead_hours / 24.0
    if remaining:
        # Every member was shifted by the same whole-degree report: its error (rounding and the 5-minute wander)
        # is shared, so none of the members' spread shows it and it adds in quadrature rather than as a floor.
        kernel_sd = math.sqrt(min_sd_f**2 + smooth_sd**2 + lead_sd**2)
    else:
        kernel_sd = max(min_sd_f, math.sqrt(smooth_sd**2 + lead_sd**2))
    if kernel_sd <= 0:
        raise WeatherModelError("kernel sd is 0: pass min_sd_f > 0 or lead time, a point forecast has no spread")
    mix_sd = math.sqrt(shrink**2 * s2 + kernel_sd**2)
    tail_sd = tail_scale * mix_sd

    c_lo = float(centres.min()) - _SUPPORT_SDS * kernel_sd
    c_hi = float(centres.max()) + _SUPPORT_SDS * kernel_sd

    def base_cdf(edges: np.ndarray) -> np.ndarray:
        """P(X < edge) under the dressed mixture plus the wide tail component."""
        # Beyond 8 kernel sds of every centre the core CDF is 0 or 1 to double precision: skip those edges.
        core = (edges > c_hi).astype(float)
        inner = (edges > c_lo) & (edges <= c_hi)
        if inner.any():
            core[inner] = w @ _phi((edges[inner][None, :] - centres[:, None]) / kernel_sd)
        if tail_weight == 0.0:
            return core
        return (1.0 - tail_weight) * core + tail_weight * _phi((edges - mean_c) / tail_sd)

    # Support wide enough that the ignored mass is negligible; the obs can lie outside the forecast's range.
    reach = _SUPPORT_SDS * (tail_sd if tail_weight else kernel_sd)
    lo_f = float(centres.min()) - reach
    hi_f = float(centres.max()) + reach
    n_min: int | None = None
    g = 1.0
    if observed_max_f is not None:
        n_min = math.floor(observed_max_f + 0.5)  # E1.7 rounding, half up, of the running max
        lo_f = max(lo_f, n_min - 1.0)
        hi_f = max(hi_f, n_min + 1.0 + (len(excess) if remaining else 0))
        if hours_left_in_day is not None and not remaining:
            g = min(1.0, hours_left_in_day / TIGHTEN_HOURS)
    support = np.arange(math.floor(lo_f), math.ceil(hi_f) + 1, dtype=np.int64)
    edges = np.append(support - 0.5, support[-1] + 0.5)

    def floor_below(t: np.ndarray, obs: float, tail: tuple[float, ...] | np.ndarray) -> np.ndarray:
        """P(the past's maximum < t): the observed max, or k degrees more with tail[k - 1]."""
        out = (t > obs).astype(float)
        for k, p in enumerate(tail):
            out = np.where((t > obs + k) & (t <= obs + k + 1), 1.0 - p, out)
        return out

    def floor_and_rest(t: np.ndarray, obs: float) -> np.ndarray:
        """P(max(past, rest) < t). Both share the level under the latest report, whose error (min_sd_f, the
        shared part of the kernel) moves the rest and, with correlation excess_level_corr, the past's excess:
        integrated over that error by Gauss-Hermite quadrature rather than treating the two as independent."""
        rho = excess_level_corr
        own_sd = math.sqrt(max(kernel_sd**2 - min_sd_f**2, 0.0))
        if rho <= 0 or not any(0.0 < p < 1.0 for p in excess) or min_sd_f <= 0 or own_sd < 0.05 * kernel_sd:
            return floor_below(t, obs, excess) * base_cdf(t)
        cut = [NormalDist().inv_cdf(1.0 - p) if 0.0 < p < 1.0 else (-math.inf if p >= 1.0 else math.inf)
               for p in excess]
        out = np.zeros_like(t)
        for u, wu in zip(_HERMITE_NODES, _HERMITE_WEIGHTS, strict=True):
            tail_u = [1.0 - NormalDist().cdf((c - rho * u) / math.sqrt(1.0 - rho**2)) if math.isfinite(c)
                      else float(c < 0) for c in cut]
            shifted = t - min_sd_f * u
            core = w @ _phi_fast((shifted[None, :] - centres[:, None]) / own_sd)
            if tail_weight:
                core = (1.0 - tail_weight) * core + tail_weight * _phi_fast((shifted - mean_c) / tail_sd)
            out += wu * floor_below(t, obs, tail_u) * core
        return out

    def cdf(t: np.ndarray) -> np.ndarray:
        """P(final max < t) after conditioning on the observed max and late-day tightening (E1.8)."""
        t = np.asarray(t, dtype=float)
        if observed_max_f is None:
            return base_cdf(t)
        obs = observed_max_f
        if remaining:
            return floor_and_rest(t, obs)
        f_obs = float(base_cdf(np.array([obs]))[0])
        tail = 1.0 - f_obs
        if g == 0.0 or tail < _MIN_TAIL_MASS:
            # End of day, or the forecast put no mass above what already happened: the max is the obs.
            return (t > obs).astype(float)
        above = t > obs
        out = np.zeros_like(t)
        if above.any():
            stretched = obs + (t[above] - obs) / g  # X' = obs + g (X - obs)  =>  P(X' < t) = P(X < obs + (t-obs)/g)
            out[above] = np.clip((base_cdf(stretched) - f_obs) / tail, 0.0, 1.0)
        return out

    c = cdf(edges)
    pmf = np.clip(np.diff(c), 0.0, None)
    pmf /= pmf.sum()
    support_f = support.astype(float)
    mean = float(pmf @ support_f)
    sd = math.sqrt(max(0.0, float(pmf @ (support_f - mean) ** 2)))

    # Brackets from the CDF directly (tails beyond the support included): P{lo..hi} = G(hi+.5) - G(lo-.5).
    lo_e = np.array([r[0] - 0.5 for r in ranges])
    hi_e = np.array([r[1] + 0.5 for r in ranges])
    finite = np.concatenate([lo_e[np.isfinite(lo_e)], hi_e[np.isfinite(hi_e)]])
    cvals = dict(zip(finite.tolist(), cdf(finite).tolist(), strict=True)) if finite.size else {}
    raw = []
    for (lo, hi), a, b in zip(ranges, lo_e, hi_e, strict=True):
        if lo > hi:
            raw.append(0.0)
            continue
        ga = 0.0 if a == -math.inf else cvals[float(a)]
        gb = 1.0 if b == math.inf else cvals[float(b)]
        raw.append(max(0.0, gb - ga))
    coverage = math.fsum(raw)
    if coverage <= 0.0:
        raise WeatherModelError(
            f"the ladder holds no probability mass (forecast mean {mean:.1f} °F): are these the markets of this day?"
        )
    probs = [p / coverage for p in raw]
    # Make the ladder sum to exactly 1 in floating point by giving the rounding residue to the largest bracket.
    top = max(range(len(probs)), key=probs.__getitem__)
    probs[top] = max(0.0, 1.0 - math.fsum(p for i, p in enumerate(probs) if i != top))

    # Confidence: more members, models that agree (spread of model means vs the kernel), fresh data.
    c_members = x.size / (x.size + _CONF_MEMBERS_HALF)
    between_sd = math.sqrt(float(model_w @ (model_means - float(model_w @ model_means)) ** 2))
    c_agree = 1.0 / (1.0 + (between_sd / kernel_sd) ** 2)
    c_age = 1.0 / (1.0 + (data_age_hours / _CONF_AGE_HALF_H) ** 2)
    confidence = min(1.0, max(0.0, c_members * c_agree * c_age))

    return WeatherForecastResult(
        probabilities={b.ticker: p for b, p in zip(brackets, probs, strict=True)},
        support=support,
        pmf=pmf,
        mean_f=mean,
        sd_f=sd,
        kernel_sd_f=kernel_sd,
        confidence=confidence,
        coverage=coverage,
        n_members=int(x.size),
        models_used=used,
        min_possible_f=n_min,
        extras={"c_members": c_members, "c_agree": c_agree, "c_age": c_age, "between_model_sd_f": between_sd,
                "tighten_g": g},
    )


__all__ = [
    "EXCESS_LEVEL_CORR",
    "TIGHTEN_HOURS",
    "Bracket",
    "LadderError",
    "StrikeType",
    "WeatherForecastResult",
    "WeatherModelError",
    "WeatherParams",
    "bracket_probabilities",
    "excess_probability",
    "remaining_maxima",
]
