"""The sim's BTC truth: a seeded 10 Hz price path, its 60-second settlement average and each strike's ideal probability.

Why: the old path (`scenarios.btc_price_at`) was a 200-term series, smooth below ~18 s, and markets settled on
its endpoint. Here the path is a jump-diffusion simulated at 100 ms, so its volatility is the stated one at
every sampling interval from 100 ms to an hour, and markets settle as Kalshi's rules say: on the simple
average of sixty one-second BRTI prints before the close (shared/ref/data_sources.md §D).

Model (annualised over a 365-day year, as `scenarios.YEAR_S`): log S is a Lévy process on a 100 ms grid,

    d log S = mu dt + sigma_d dW + dJ,   J compound Poisson, rate lambda, log-jump sizes N(0, jump_sd²),

with the total variance per unit time split as vol² = sigma_d² + lambda·jump_sd², so a realised volatility
measured at any interval is `vol` whether or not a jump falls in the sample. The defaults (4 jumps a day,
jump_sd 40 bp) give jumps 4·365·0.004² = 0.0234 of vol² = 0.25 (9.3 %), so sigma_d = 0.4761. The drift
mu = -sigma_d²/2 - lambda·(exp(jump_sd²/2) - 1) makes the price a martingale (zero drift in S).

The path is made one hour (36,000 steps) at a time. Each chunk first draws its summary — its total
diffusion move and its jumps — from a stream seeded by (seed, chunk, 0); its interior is then a Brownian
bridge to that total from a stream seeded by (seed, chunk, 1). Chunk start prices therefore need only the
summaries of earlier chunks (a few draws each, kept as one float per chunk), any value is reproducible
whatever the order of queries, and only a bounded number of interiors is cached.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np

YEAR_S = 365 * 86_400
STEP_US = 100_000  # the path's grid: one value per 100 ms
CHUNK_STEPS = 36_000  # one hour of steps per generated chunk
SETTLEMENT_SAMPLES = 60  # one BRTI print a second over the minute before the close
DEFAULT_JUMP_RATE_PER_DAY = 4.0
DEFAULT_JUMP_SD = 0.004  # 40 bp log-jump standard deviation
_DT_YEARS = STEP_US / 1e6 / YEAR_S
_SUMMARY_STREAM, _INTERIOR_STREAM = 0, 1
_POISSON_SPAN_SDS = 12.0  # jump counts kept in the mixture: mean ± 12 sd (+12), the rest weighs < 1e-12
_OFFSETS = np.arange(CHUNK_STEPS)
_BRIDGE_FRAC = np.arange(1, CHUNK_STEPS + 1) / CHUNK_STEPS


class BtcTruthError(ValueError):
    """A BTC truth query outside the path: a naive time, a time before the path's start, or bad parameters."""


@dataclass(frozen=True)
class _Chunk:
    """An hour's summary: the diffusion part of its total log move (standard normal `g`) and its jumps."""

    g: float
    jump_steps: np.ndarray  # step m moves values at offsets > m
    jump_sizes: np.ndarray  # log-jump sizes


class BtcPath:
    """A seeded, deterministic BTC price path on a 100 ms grid, with the stated volatility at every interval.

    `price_at(t)` is the value at the last grid point at or before `t` (the last print), so a return over
    any interval spans on average exactly interval/100 ms steps and keeps the stated variance.
    """

    def __init__(self, seed: int, start: datetime, spot0: float, vol: float = 0.5,
                 jump_rate_per_day: float = DEFAULT_JUMP_RATE_PER_DAY, jump_sd: float = DEFAULT_JUMP_SD,
                 cache_chunks: int = 4) -> None:
        _check_params(seed, start, spot0, vol, jump_rate_per_day, jump_sd, cache_chunks)
        self.seed, self.start, self.spot0, self.vol = seed, start, float(spot0), float(vol)
        self.jump_rate_per_day, self.jump_sd = float(jump_rate_per_day), float(jump_sd)
        self._lambda = self.jump_rate_per_day * 365.0  # jumps per year
        self._sig2 = self.vol**2 - self._lambda * self.jump_sd**2  # diffusion variance per year
        self._mu = -0.5 * self._sig2 - self._lambda * math.expm1(0.5 * self.jump_sd**2)
        self._log0: list[float] = [math.log(self.spot0)]  # log price at the start of each chunk so far
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_chunks = cache_chunks

    @property
    def diffusion_vol(self) -> float:
        """The Brownian part's annual volatility: sqrt(vol² - jump rate · jump_sd²)."""
        return math.sqrt(self._sig2)

    @property
    def jump_variance_share(self) -> float:
        """The share of vol² carried by jumps."""
        return 1.0 - self._sig2 / self.vol**2

    # --- the path ---------------------------------------------------------------------------------------

    def price_at(self, t: datetime) -> float:
        """The price at `t` (UTC-aware, not before `start`): the last 100 ms grid value at or before `t`."""
        return float(self._prices_at(np.array([self._step_index(t)], dtype=np.int64))[0])

    def sample(self, t0: datetime, every: timedelta, n: int) -> np.ndarray:
        """`n` prices at t0, t0 + every, ... — `price_at` of each, vectorised (for tests and venue feeds)."""
        every_us = _micros(every)
        if every_us <= 0 or n < 0:
            raise BtcTruthError(f"sample needs a positive interval and n >= 0, got {every} and {n}")
        us = self._micros_since_start(t0) + np.arange(n, dtype=np.int64) * every_us
        return self._prices_at(us // STEP_US)

    def _step_index(self, t: datetime) -> int:
        return self._micros_since_start(t) // STEP_US

    def _micros_since_start(self, t: datetime) -> int:
        if t.tzinfo is None or t.utcoffset() is None:
            raise BtcTruthError(f"BTC path times must be timezone-aware (UTC), got naive {t.isoformat()}")
        us = _micros(t - self.start)
        if us < 0:
            raise BtcTruthError(f"{t.isoformat()} is before the BTC path's start {self.start.isoformat()}")
        return us

    def _prices_at(self, steps: np.ndarray) -> np.ndarray:
        """Prices at ascending grid indices, chunk by chunk; an index on a chunk boundary needs no interior."""
        out = np.empty(len(steps), dtype=np.float64)
        chunks, offsets = np.divmod(steps, CHUNK_STEPS)
        cuts = np.flatnonzero(np.diff(chunks)) + 1 if np.all(np.diff(steps) >= 0) else np.arange(1, len(steps))
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(steps)], strict=True):
            if lo == hi:
                continue
            c, offs = int(chunks[lo]), offsets[lo:hi]
            out[lo:hi] = math.exp(self._chunk_log0(c)) if not offs.any() else self._interior(c)[offs]
        return out

    def _chunk_log0(self, c: int) -> float:
        """The log price at the start of chunk `c`, extending the list of chunk start prices in order."""
        while len(self._log0) <= c:
            k = len(self._log0) - 1
            summary = self._summary(k)
            self._log0.append(self._log0[k] + self._diffusion_total(summary.g) + float(summary.jump_sizes.sum()))
        return self._log0[c]

    def _summary(self, c: int) -> _Chunk:
        rng = np.random.default_rng([self.seed, c, _SUMMARY_STREAM])
        g = float(rng.standard_normal())
        k = int(rng.poisson(self._lambda * CHUNK_STEPS * _DT_YEARS))
        return _Chunk(g=g, jump_steps=rng.integers(0, CHUNK_STEPS, size=k),
                      jump_sizes=rng.normal(0.0, self.jump_sd, size=k) if self.jump_sd > 0 else np.zeros(k))

    def _diffusion_total(self, g: float) -> float:
        return self._mu * CHUNK_STEPS * _DT_YEARS + math.sqrt(self._sig2 * CHUNK_STEPS * _DT_YEARS) * g

    def _interior(self, c: int) -> np.ndarray:
        """Chunk `c`'s 36,000 prices, cached (bounded, least recently used first out) and regenerated on demand."""
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        log0, summary = self._chunk_log0(c), self._summary(c)
        prices = np.exp(log0 + self._interior_log_moves(c, summary))
        prices[0] = math.exp(log0)  # bit-identical to the summary-only value at the boundary, whatever exp numpy uses
        self._cache[c] = prices
        if len(self._cache) > self._cache_chunks:
            self._cache.popitem(last=False)
        return prices

    def _interior_log_moves(self, c: int, summary: _Chunk) -> np.ndarray:
        """Log moves from the chunk start at offsets 0..N-1: drift + Brownian bridge to the summary's total + jumps."""
        n = CHUNK_STEPS
        walk = np.cumsum(np.random.default_rng([self.seed, c, _INTERIOR_STREAM]).standard_normal(n))
        # W_j = S_j - (j/N) S_N + (j/N) sqrt(N) g: a Brownian bridge (independent of S_N) pinned to the total.
        bridge = walk + _BRIDGE_FRAC * (math.sqrt(n) * summary.g - walk[-1])
        moves = np.empty(n)
        moves[0] = 0.0
        moves[1:] = bridge[:-1]
        moves *= math.sqrt(self._sig2 * _DT_YEARS)
        moves += (self._mu * _DT_YEARS) * _OFFSETS
        if len(summary.jump_steps):
            jumps = np.zeros(n + 1)
            np.add.at(jumps, summary.jump_steps + 1, summary.jump_sizes)
            moves += np.cumsum(jumps)[:n]
        return moves

    # --- settlement and the ideal probability ---------------------------------------------------------

    def settlement_times(self, close: datetime) -> list[datetime]:
        """The sixty one-second prints averaged: close-59 s, ..., close (the last print is at the close)."""
        return [close - timedelta(seconds=SETTLEMENT_SAMPLES - k) for k in range(1, SETTLEMENT_SAMPLES + 1)]

    def settlement_price(self, close: datetime) -> float:
        """The simple average of the sixty one-second prints in the minute before `close`, rounded to cents.

        Convention: prints at close-60 s+1 s, ..., close (the window (close-60 s, close]); ties in rounding
        have probability zero, so Python's round-half-even is harmless.
        """
        first = close - timedelta(seconds=SETTLEMENT_SAMPLES - 1)
        return round(math.fsum(self.sample(first, timedelta(seconds=1), SETTLEMENT_SAMPLES)) / SETTLEMENT_SAMPLES, 2)

    def forecast(self, close: datetime, now: datetime) -> SettlementForecast:
        """The law of `settlement_price(close)` given the path up to `now` (grid values at or before `now`)."""
        i_now = self._step_index(now)
        first = close - timedelta(seconds=SETTLEMENT_SAMPLES - 1)
        idx = (self._micros_since_start(first) + np.arange(SETTLEMENT_SAMPLES) * 1_000_000) // STEP_US
        known = idx <= i_now
        if known.all():
            return SettlementForecast.settled(self.settlement_price(close))
        known_sum = math.fsum(self._prices_at(idx[known])) if known.any() else 0.0
        weights, means, sds = _average_law(tuple(int(k) for k in idx[~known] - i_now), self._sig2, self._lambda,
                                           self.jump_sd)
        return SettlementForecast(known_sum=known_sum, spot_now=float(self._prices_at(np.array([i_now]))[0]),
                                  weights=weights, log_means=means, log_sds=sds)

    def ideal_above(self, strike: float, close: datetime, now: datetime) -> float:
        """P(settlement_price(close) > strike | the path up to `now`) — what a perfect forecaster would quote."""
        return self.forecast(close, now).above(strike)

    def ideal_below(self, strike: float, close: datetime, now: datetime) -> float:
        """P(settlement_price(close) < strike | the path up to `now`)."""
        return self.forecast(close, now).below(strike)

    def ideal_between(self, lo: float, hi: float, close: datetime, now: datetime) -> float:
        """P(lo <= settlement_price(close) <= hi | the path up to `now`); a bracket is [a, a + width - 0.01]."""
        return self.forecast(close, now).between(lo, hi)


@dataclass(frozen=True)
class SettlementForecast:
    """The settlement average A = (known_sum + spot_now · Y) / 60, with log Y a Poisson mixture of normals.

    Y is the sum of the remaining prints relative to the price now. Given the number n of jumps before
    the last print (Poisson, exact weights) the first two moments of Y are exact; each component is the
    lognormal with those moments (Fenton–Wilkinson matching). Before the window, Y is the price at the
    window's start times an average over one minute, nearly lognormal given n; inside the window the
    remaining prints are few and their moments exact, so the only approximation is the shape of the
    rare components with a jump inside the window (weight λ·60 s = 0.3 % by default). Against Monte Carlo
    the error is below 1e-3 from an hour out to the last seconds; one lognormal for the whole law (no
    mixture) is off by up to 0.012 inside the window, where a 40 bp jump dwarfs a minute's diffusion.
    After the close, `settle` is known.
    """

    known_sum: float = 0.0
    spot_now: float = 0.0
    weights: tuple[float, ...] = ()
    log_means: tuple[float, ...] = ()
    log_sds: tuple[float, ...] = ()
    settle: float | None = None

    @classmethod
    def settled(cls, price: float) -> SettlementForecast:
        """A forecast once every print is known: the settlement price itself."""
        return cls(settle=price)

    def average_at_least(self, x: float) -> float:
        """P(A >= x) for the unrounded average A."""
        if self.settle is not None:
            return 1.0 if self.settle >= x else 0.0
        y = (SETTLEMENT_SAMPLES * x - self.known_sum) / self.spot_now
        if y <= 0:
            return 1.0
        log_y = math.log(y)
        p = math.fsum(w * 0.5 * math.erfc((log_y - m) / (s * math.sqrt(2.0)))
                      for w, m, s in zip(self.weights, self.log_means, self.log_sds, strict=True))
        return min(max(p, 0.0), 1.0)

    def above(self, strike: float) -> float:
        """P(settle > strike): settle has cents, so settle > K ⟺ settle ≥ the next cent ⟺ A ≥ that cent - 0.005."""
        if self.settle is not None:
            return 1.0 if self.settle > strike else 0.0
        return self.average_at_least((_cents_above(strike) - 0.5) / 100)

    def below(self, strike: float) -> float:
        """P(settle < strike) = 1 - P(settle ≥ the first cent ≥ strike)."""
        if self.settle is not None:
            return 1.0 if self.settle < strike else 0.0
        return 1.0 - self.average_at_least((_cents_at_least(strike) - 0.5) / 100)

    def between(self, lo: float, hi: float) -> float:
        """P(lo <= settle <= hi), with the settlement price in cents."""
        if self.settle is not None:
            return 1.0 if lo <= self.settle <= hi else 0.0
        first, last = _cents_at_least(lo), _cents_at_most(hi)
        if last < first:
            return 0.0
        p = self.average_at_least((first - 0.5) / 100) - self.average_at_least((last + 0.5) / 100)
        return min(max(p, 0.0), 1.0)


def _cents_at_least(x: float) -> int:
    """The smallest whole number of cents ≥ x dollars (x·100 is rounded to 1e-6 first: 115749.99·100 ≠ 11574999)."""
    return math.ceil(round(x * 100, 6))


def _cents_at_most(x: float) -> int:
    return math.floor(round(x * 100, 6))


def _cents_above(x: float) -> int:
    return _cents_at_most(x) + 1


@lru_cache(maxsize=4096)
def _average_law(steps: tuple[int, ...], sig2: float, lam: float,
                 jump_sd: float) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Poisson weights and lognormal (mean, sd) of log Y per jump count, Y = Σ_j S(now + steps_j)/S(now).

    A pure function of the remaining prints' offsets (in 100 ms steps), so ladders and repeated queries at
    the same offsets share it. Conditional on n jumps in (now, last print], each jump's step is uniform, so
    it moves print j with probability q_j = steps_j / steps_last; with b1_j = 1 + q_j (e^{s²/2} - 1),
    E[S_j/S_now | n] = e^{-λ(e^{s²/2}-1) T_j} b1_j^n, and Cov(S_j, S_k | n) / (E_j E_k) =
    expm1(σ_d² min(T_j, T_k) + n (log b2_jk - log b1_j - log b1_k)),
    b2_jk = 1 + q_min (e^{2s²} - 1) + (q_max - q_min)(e^{s²/2} - 1).
    """
    t = np.asarray(steps, dtype=np.float64) * _DT_YEARS
    q = np.asarray(steps, dtype=np.float64) / steps[-1]
    a1, a4 = math.expm1(0.5 * jump_sd**2), math.expm1(2.0 * jump_sd**2)
    log_b1 = np.log1p(q * a1)
    q_min, q_max = np.minimum.outer(q, q), np.maximum.outer(q, q)
    log_b2 = np.log1p(q_min * a4 + (q_max - q_min) * a1)
    jump_cov = log_b2 - log_b1[:, None] - log_b1[None, :]
    diff_cov = sig2 * np.minimum.outer(t, t)
    ns, weights = _poisson_weights(lam * t[-1])
    means, sds = [], []
    for n in ns:
        e1 = np.exp(-lam * a1 * t + n * log_b1)
        m1 = float(e1.sum())
        var = float(np.einsum("i,ij,j->", e1, np.expm1(diff_cov + n * jump_cov), e1))  # no BLAS threads
        s2 = math.log1p(max(var, 0.0) / (m1 * m1))
        means.append(math.log(m1) - 0.5 * s2)
        sds.append(math.sqrt(s2))
    return tuple(weights), tuple(means), tuple(sds)


def _poisson_weights(mean: float) -> tuple[list[int], list[float]]:
    """Jump counts carrying all but ~1e-12 of a Poisson(mean) law, and their renormalised weights."""
    if mean <= 0:
        return [0], [1.0]
    spread = _POISSON_SPAN_SDS * math.sqrt(mean) + _POISSON_SPAN_SDS
    ns = list(range(max(0, math.floor(mean - spread)), math.ceil(mean + spread) + 1))
    logs = [n * math.log(mean) - mean - math.lgamma(n + 1) for n in ns]
    top = max(logs)
    raw = [math.exp(v - top) for v in logs]
    total = math.fsum(raw)
    return ns, [r / total for r in raw]


def _micros(d: timedelta) -> int:
    """A timedelta in whole microseconds, exactly (no float seconds)."""
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _check_params(seed: int, start: datetime, spot0: float, vol: float, jump_rate_per_day: float,
                  jump_sd: float, cache_chunks: int) -> None:
    if not isinstance(seed, int) or seed < 0:
        raise BtcTruthError(f"BtcPath seed must be a non-negative int (numpy SeedSequence entropy), got {seed!r}")
    if start.tzinfo is None or start.utcoffset() is None:
        raise BtcTruthError(f"BtcPath start must be timezone-aware (UTC), got naive {start.isoformat()}")
    if not (spot0 > 0 and vol > 0 and jump_rate_per_day >= 0 and jump_sd >= 0 and cache_chunks >= 1):
        raise BtcTruthError(f"BtcPath needs spot0 > 0, vol > 0, jump rate and size >= 0, cache >= 1; got "
                            f"{spot0}, {vol}, {jump_rate_per_day}, {jump_sd}, {cache_chunks}")
    jump_var = jump_rate_per_day * 365.0 * jump_sd**2
    if jump_var >= vol**2:
        raise BtcTruthError(f"jumps carry {jump_var:.4f}/yr of variance, not less than vol² = {vol**2:.4f}: "
                            "lower jump_rate_per_day or jump_sd so the diffusion keeps a positive share")
