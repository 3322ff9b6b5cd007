"""BTC settlement-index models: composite spot from venues, EWMA vol, bounded momentum, digital P(YES) (ref E2).

Pure functions of arrays: no I/O, no clock. Units:
- venue prices and the composite are ints in $0.0001 ticks (DESIGN §3); the probability functions take spot
  and strikes as floats in the same unit as each other (dollars: `price_ticks / ONE_DOLLAR`, strikes as
  Kalshi's `floor_strike` / `cap_strike`);
- vol and drift are annualised over a 365-day year (crypto trades 24/7, E2); times are seconds;
- returns are log returns sampled every `dt_s` seconds, oldest first.

Settlement is the simple average of the 60 one-second BRTI prints before close (data_sources.md D). The model
is geometric Brownian motion for the index; the average is modelled as the average of log prices (the
geometric average; its gap to the arithmetic average is O(σ²w), about 1e-6 here). With w the averaging window
and T the time to close, the averaged log price is Gaussian with (E2, "60-second averaging"):
- T >= w: variance σ²(T - 2w/3), mean ln S + (μ - σ²/2)(T - w/2);
- 0 < T < w, inside the window: the (w - T) seconds already printed are known (`window_avg`, default: spot),
  only the remaining T seconds are random: variance σ²T³/(3w²), mean ((w - T) ln A + T ln S)/w
  + (μ - σ²/2)T²/(2w). Both branches give σ²w/3 at T = w, so the probability is continuous through it;
- T <= 0 or σ = 0: no randomness left: P is 1 or 0, and 0.5 when the centre equals the strike exactly (the
  limit of the continuous model; our spot only approximates BRTI, so a tie is a coin flip to us).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SECONDS_PER_YEAR = 365.0 * 86_400.0  # E2: 365-day annualisation

_SQRT2 = math.sqrt(2.0)
_UPPER = ("greater", "greater_or_equal")
_LOWER = ("less", "less_or_equal")
# Composite confidence: the dispersion (bps) among used venues at which the agreement factor halves.
_DISAGREE_HALF_BPS_FRACTION = 0.2  # of outlier_bps: 50 bps outlier cut -> 10 bps
# Momentum: standard errors a mean return must clear before it counts as drift.
_MOMENTUM_Z = 2.0


class BtcModelError(ValueError):
    """Inputs the BTC model cannot price (non-positive prices, unknown strike types, mismatched arrays)."""


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, elementwise, exact to double precision (math.erfc; numpy has no erf)."""
    flat = np.asarray(x, dtype=float).ravel()
    out = np.fromiter(map(math.erfc, (-flat / _SQRT2).tolist()), dtype=float, count=flat.size)
    return (0.5 * out).reshape(np.shape(x))


# ---------------------------------------------------------------------------------------------- composite spot


@dataclass(frozen=True, slots=True)
class VenueQuote:
    """One venue's latest price (mid or last, $0.0001 ticks), its age in seconds and its weight in the composite."""

    price_ticks: int
    age_s: float
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class CompositeSpot:
    """The composite price (None when no venue is usable), its confidence in [0, 1], and which venues counted."""

    price_ticks: int | None
    confidence: float
    used: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    """Venue -> reason: "stale", "outlier", "invalid_price", "no_weight"."""
    dispersion_bps: float = 0.0
    """Weighted mean absolute deviation of the used venues from the composite, in basis points."""


def _weighted_median(prices: np.ndarray, weights: np.ndarray) -> float:
    """Weighted median: the price where cumulative weight reaches half; the midpoint on an exact tie."""
    order = np.argsort(prices, kind="stable")
    p, w = prices[order], weights[order]
    cum = np.cumsum(w)
    half = cum[-1] / 2.0
    i = int(np.searchsorted(cum, half))
    if math.isclose(cum[i], half, rel_tol=1e-12) and i + 1 < p.size:
        return (p[i] + p[i + 1]) / 2.0
    return float(p[i])


def composite_spot(
    quotes: dict[str, VenueQuote], *, max_age_s: float = 10.0, outlier_bps: float = 50.0
) -> CompositeSpot:
    """Weighted median of fresh venues after dropping stale ones and outliers from the median (data_sources D)."""
    # BRTI itself drops stale books and is a depth-weighted blend; the public approximation is the median of
    # fresh mids (D). A median resists one bad venue; the outlier cut then removes it from the dispersion too.
    if max_age_s <= 0 or outlier_bps <= 0:
        raise BtcModelError(f"max_age_s and outlier_bps must be > 0, got {max_age_s!r}, {outlier_bps!r}")
    dropped: dict[str, str] = {}
    names: list[str] = []
    prices: list[float] = []
    wts: list[float] = []
    fresh: list[float] = []
    total_w = 0.0
    for name, q in quotes.items():
        w = float(q.weight)
        if not math.isfinite(w) or w <= 0:
            dropped[name] = "no_weight"
            continue
        total_w += w
        if not isinstance(q.price_ticks, int) or q.price_ticks <= 0:
            dropped[name] = "invalid_price"
            continue
        age = float(q.age_s)
        if not math.isfinite(age) or age >= max_age_s:
            dropped[name] = "stale"
            continue
        names.append(name)
        prices.append(float(q.price_ticks))
        wts.append(w)
        # Freshness fades quadratically to 0 at max_age_s and scales the venue's weight, so the composite,
        # its dispersion and its confidence have no step when a venue crosses the cut-off; a negative age
        # (clock skew) counts as fresh.
        fresh.append(1.0 - (max(age, 0.0) / max_age_s) ** 2)
    if not names:
        return CompositeSpot(None, 0.0, [], dropped, 0.0)
    p = np.asarray(prices)
    f = np.asarray(fresh)
    w = np.asarray(wts) * f
    med = _weighted_median(p, w)
    dev_bps = np.abs(p / med - 1.0) * 1e4
    keep = dev_bps <= outlier_bps
    for n, k in zip(names, keep, strict=True):
        if not k:
            dropped[n] = "outlier"
    if not keep.any():
        # No majority: e.g. two venues 2% apart. Nothing to trust.
        return CompositeSpot(None, 0.0, [], dropped, float(np.max(dev_bps)))
    p, w = p[keep], w[keep]
    used = [n for n, k in zip(names, keep, strict=True) if k]
    price = _weighted_median(p, w)
    dispersion = float(w @ (np.abs(p / price - 1.0) * 1e4) / w.sum())
    coverage = float(w.sum()) / total_w
    half = _DISAGREE_HALF_BPS_FRACTION * outlier_bps
    agreement = 1.0 / (1.0 + (dispersion / half) ** 2)
    confidence = min(1.0, max(0.0, coverage * agreement))
    return CompositeSpot(round(price), confidence, used, dropped, dispersion)


# ---------------------------------------------------------------------------------------------- vol and drift


def _ewma_weights(n: int, dt_s: float, halflife_s: float) -> np.ndarray:
    """Weights for n samples, oldest first, halving every halflife_s."""
    lam = 0.5 ** (dt_s / halflife_s)
    return lam ** np.arange(n - 1, -1, -1, dtype=float)


def _clean_returns(log_returns: np.ndarray, dt_s: float, halflife_s: float) -> np.ndarray:
    """Validate the sampling parameters and return the finite returns."""
    if not (math.isfinite(dt_s) and dt_s > 0 and math.isfinite(halflife_s) and halflife_s > 0):
        raise BtcModelError(f"dt_s and halflife_s must be finite and > 0, got {dt_s!r}, {halflife_s!r}")
    r = np.asarray(log_returns, dtype=float).ravel()
    return r[np.isfinite(r)]


def ewma_vol(log_returns: np.ndarray, dt_s: float, halflife_s: float, floor: float, cap: float) -> float:
    """EWMA realised vol of zero-mean log returns, annualised over 365 days and clipped to [floor, cap]."""
    # E2: realised vol on short returns; EWMA (RiskMetrics, mean taken as 0 at these horizons) reacts faster
    # than a flat window. Annualise by periods per year = SECONDS_PER_YEAR / dt_s. Without data, return cap:
    # a wide distribution keeps probabilities near 0.5, which is the cautious error for trading.
    if not (0 <= floor <= cap and math.isfinite(cap)):
        raise BtcModelError(f"need 0 <= floor <= cap < inf, got floor={floor!r}, cap={cap!r}")
    r = _clean_returns(log_returns, dt_s, halflife_s)
    if r.size == 0:
        return float(cap)
    wts = _ewma_weights(r.size, dt_s, halflife_s)
    var_step = float(wts @ (r * r)) / float(wts.sum())
    vol = math.sqrt(var_step * SECONDS_PER_YEAR / dt_s)
    return float(min(cap, max(floor, vol)))


def momentum(log_returns: np.ndarray, dt_s: float, halflife_s: float, *, max_abs: float = 2.0) -> float:
    """Annualised drift from recent returns, shrunk by its own noise and bounded by ±max_abs (E2 μ term)."""
    # E2 sets μ ≈ 0 for short horizons; this only lets a clearly significant trend tilt d2. The EWMA mean is
    # soft-thresholded at 2 standard errors (sign(m) max(0, |m| - 2 se)), so pure noise gives exactly 0 about
    # 95% of the time; the bound keeps μT tiny: at the default 2.0/yr, one hour moves the centre <= 2.3 bps.
    if not (math.isfinite(max_abs) and max_abs >= 0):
        raise BtcModelError(f"max_abs must be a finite number >= 0, got {max_abs!r}")
    r = _clean_returns(log_returns, dt_s, halflife_s)
    if r.size < 2:
        return 0.0
    wts = _ewma_weights(r.size, dt_s, halflife_s)
    sw = float(wts.sum())
    mean = float(wts @ r) / sw
    var = float(wts @ (r - mean) ** 2) / sw
    n_eff = sw * sw / float(wts @ wts)
    se = math.sqrt(var / n_eff)
    shrunk = math.copysign(max(0.0, abs(mean) - _MOMENTUM_Z * se), mean)
    drift = shrunk * SECONDS_PER_YEAR / dt_s
    return float(min(max_abs, max(-max_abs, drift)))


# ---------------------------------------------------------------------------------------------- digitals


def _centre_and_sd(
    spot: float, seconds_to_close: float, vol: float, drift: float, averaging_window_s: float,
    window_avg: float | None,
) -> tuple[float, float]:
    """Mean of the settlement's log minus ln(spot), and its sd, per the module docstring."""
    # Returned relative to ln(spot), so d2 uses ln(S/K) computed from the ratio: at T -> 0 the sd is ~1e-15
    # and the cancellation in ln S - ln K would otherwise decide the sign.
    if not (math.isfinite(spot) and spot > 0):
        raise BtcModelError(f"spot must be a finite price > 0, got {spot!r}")
    if not (math.isfinite(vol) and vol >= 0):
        raise BtcModelError(f"vol must be a finite annualised number >= 0, got {vol!r}")
    if not math.isfinite(drift):
        raise BtcModelError(f"drift must be finite, got {drift!r}")
    if not (math.isfinite(averaging_window_s) and averaging_window_s >= 0):
        raise BtcModelError(f"averaging_window_s must be a finite number >= 0, got {averaging_window_s!r}")
    if not math.isfinite(seconds_to_close):
        raise BtcModelError(f"seconds_to_close must be finite, got {seconds_to_close!r}")
    if window_avg is not None and not (math.isfinite(window_avg) and window_avg > 0):
        raise BtcModelError(f"window_avg must be a finite price > 0 or None, got {window_avg!r}")
    t = max(0.0, seconds_to_close) / SECONDS_PER_YEAR
    w = averaging_window_s / SECONDS_PER_YEAR
    mu = drift - 0.5 * vol * vol
    if t >= w:
        return mu * (t - w / 2.0), vol * math.sqrt(max(0.0, t - 2.0 * w / 3.0))
    # Inside the averaging window (w > t >= 0): (w - t) of the average is already printed; relative to ln S
    # the centre ((w - t) ln A + t ln S)/w is (1 - t/w) ln(A/S).
    printed = 0.0 if window_avg is None else (1.0 - t / w) * math.log(window_avg / spot)
    return printed + mu * t * t / (2.0 * w), vol * math.sqrt(t**3 / (3.0 * w * w))


def _p_above(x: np.ndarray, sd: float) -> np.ndarray:
    """P(settlement > K) from x = centre - ln K; the deterministic 1/0/0.5 outcome when sd is 0."""
    if sd <= 0.0:
        return np.where(x > 0.0, 1.0, np.where(x < 0.0, 0.0, 0.5))
    return _phi(x / sd)  # E2: Φ(d2)


def _log_moneyness(spot: float, strikes: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    """Validate strikes (finite, > 0) and return ln(spot / K) (0 exactly when K == spot)."""
    k = np.asarray(strikes, dtype=float)
    if k.ndim != 1:
        raise BtcModelError(f"{what} must be a 1-d array, got shape {k.shape}")
    if not (np.all(np.isfinite(k)) and np.all(k > 0)):
        raise BtcModelError(f"{what} must be finite prices > 0")
    return np.log(spot / k)


def digital_probabilities(
    spot: float,
    strikes: np.ndarray | Sequence[float],
    strike_types: np.ndarray | Sequence[str],
    seconds_to_close: float,
    vol: float,
    *,
    drift: float = 0.0,
    averaging_window_s: float = 60.0,
    window_avg: float | None = None,
) -> np.ndarray:
    """P(YES) per threshold market: greater(_or_equal) -> P(avg > K), less(_or_equal) -> P(avg < K)."""
    # `strikes` is the market's floor_strike for greater/greater_or_equal and cap_strike for less/less_or_equal.
    # The settlement is continuous, so > and >= have the same probability except in the deterministic limit.
    centre, sd = _centre_and_sd(spot, seconds_to_close, vol, drift, averaging_window_s, window_avg)
    x = _log_moneyness(spot, strikes, "strikes") + centre
    types = np.asarray(strike_types)
    if types.shape != x.shape:
        raise BtcModelError(f"strikes and strike_types differ in length: {x.size} vs {types.size}")
    upper = np.isin(types, _UPPER)
    lower = np.isin(types, _LOWER)
    if not np.all(upper | lower):
        bad = sorted(set(types[~(upper | lower)].tolist()))
        hint = "; price 'between' markets with range_probabilities or market_probabilities" if "between" in bad else ""
        raise BtcModelError(f"unsupported strike_type(s) {bad}{hint}")
    if sd <= 0.0:
        p_up = _p_above(x, sd)
        return np.where(upper, p_up, 1.0 - p_up)  # a tie is 0.5 on both sides
    d = x / sd
    # Φ(-d) directly for "less" keeps precision in the far tail instead of 1 - Φ(d).
    return _phi(np.where(upper, d, -d))


def range_probabilities(
    spot: float,
    floors: np.ndarray | Sequence[float],
    caps: np.ndarray | Sequence[float],
    seconds_to_close: float,
    vol: float,
    *,
    drift: float = 0.0,
    averaging_window_s: float = 60.0,
    window_avg: float | None = None,
) -> np.ndarray:
    """P(floor <= avg <= cap) per `between` market, as the difference of two digitals (kalshi_api.md §8)."""
    centre, sd = _centre_and_sd(spot, seconds_to_close, vol, drift, averaging_window_s, window_avg)
    x_f = _log_moneyness(spot, floors, "floors") + centre
    x_c = _log_moneyness(spot, caps, "caps") + centre
    if x_f.shape != x_c.shape:
        raise BtcModelError(f"floors and caps differ in length: {x_f.size} vs {x_c.size}")
    if np.any(x_f < x_c):
        raise BtcModelError("a range has floor > cap")
    if sd <= 0.0:
        return np.clip(_p_above(x_f, sd) - _p_above(x_c, sd), 0.0, 1.0)
    d_f = x_f / sd
    d_c = x_c / sd
    # Subtract the two small tail probabilities rather than two numbers near 1 when the range is below the
    # centre (d_c > 0): Φ(d_f) - Φ(d_c) = Φ(-d_c) - Φ(-d_f).
    upper_tail = d_c > 0
    a = _phi(np.where(upper_tail, -d_c, d_f))
    b = _phi(np.where(upper_tail, -d_f, d_c))
    return np.clip(a - b, 0.0, 1.0)


def market_probabilities(
    spot: float,
    strike_types: np.ndarray | Sequence[str],
    floors: np.ndarray | Sequence[float],
    caps: np.ndarray | Sequence[float],
    seconds_to_close: float,
    vol: float,
    *,
    drift: float = 0.0,
    averaging_window_s: float = 60.0,
    window_avg: float | None = None,
) -> np.ndarray:
    """P(YES) for a mixed ladder straight from market fields (floor_strike, cap_strike; NaN where absent)."""
    types = np.asarray(strike_types)
    f = np.asarray(floors, dtype=float)
    c = np.asarray(caps, dtype=float)
    if not (types.shape == f.shape == c.shape) or types.ndim != 1:
        raise BtcModelError(f"strike_types, floors and caps must be 1-d and equally long: {types.shape}, "
                            f"{f.shape}, {c.shape}")
    out = np.empty(types.size, dtype=float)
    kw = {"drift": drift, "averaging_window_s": averaging_window_s, "window_avg": window_avg}
    between = types == "between"
    upper = np.isin(types, _UPPER)
    thresh = ~between
    if thresh.any():
        strikes = np.where(upper, f, c)[thresh]
        out[thresh] = digital_probabilities(spot, strikes, types[thresh], seconds_to_close, vol, **kw)
    if between.any():
        out[between] = range_probabilities(spot, f[between], c[between], seconds_to_close, vol, **kw)
    return out


__all__ = [
    "SECONDS_PER_YEAR",
    "BtcModelError",
    "CompositeSpot",
    "VenueQuote",
    "composite_spot",
    "digital_probabilities",
    "ewma_vol",
    "market_probabilities",
    "momentum",
    "range_probabilities",
]
