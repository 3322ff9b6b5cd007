"""The sim's BTC truth: a deterministic path with the stated volatility at every interval, jumps, settlement
on the 60-second average, and an ideal probability that agrees with Monte Carlo and is calibrated."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import NormalDist

import numpy as np
import pytest

from services.sim.btc_truth import BtcPath, BtcTruthError

START = datetime(2026, 11, 23, tzinfo=UTC)
SPOT = 90_000.0
YEAR_S = 365 * 86_400
HOUR = timedelta(hours=1)
TICK = timedelta(milliseconds=100)
DAYS = 20  # of 100 ms path for the volatility and jump checks: 17.3 M returns, ~80 jumps
SD_LIMIT = 4.0  # tolerance in standard errors for seeded statistical checks


def model(path: BtcPath) -> tuple[float, float, float]:
    """(diffusion variance per year, log drift per year, jumps per year) re-derived from the documented split."""
    lam = path.jump_rate_per_day * 365
    sig2 = path.vol**2 - lam * path.jump_sd**2
    return sig2, -0.5 * sig2 - lam * math.expm1(0.5 * path.jump_sd**2), lam


def sumsq(r: np.ndarray) -> float:
    """Σ r², without BLAS (`r @ r` spawns BLAS threads that thrash on a shared 2-core machine)."""
    return float(np.square(r).sum())


def squared_return_se(path: BtcPath, every_s: float, n: int) -> float:
    """Standard error of the mean squared log return: Var(r²) = 2 v² + 3 λΔ s⁴ for a jump-diffusion."""
    dt = every_s / YEAR_S
    v = path.vol**2 * dt
    return math.sqrt((2 * v * v + 3 * path.jump_rate_per_day * 365 * dt * path.jump_sd**4) / n)


@dataclass
class Run:
    """Squared-return sums by interval and the 100 ms returns that can only be jumps, over DAYS of one path."""

    path: BtcPath
    sum_r2: dict[str, float]
    count: dict[str, int]
    diffusion_r2: float  # 100 ms returns that are not jumps
    diffusion_n: int
    boundary_z2: list[float]  # 100 ms returns across chunk boundaries, in diffusion standard deviations
    jumps: list[float]


INTERVALS_S = {"100ms": 0.1, "1s": 1.0, "1min": 60.0, "1h mid-chunk": 3600.0}


@pytest.fixture(scope="module")
def run() -> Run:
    path = BtcPath(11, START, SPOT)
    sd_step = math.sqrt(model(path)[0] * 0.1 / YEAR_S)
    sums = dict.fromkeys(INTERVALS_S, 0.0)
    counts = dict.fromkeys(INTERVALS_S, 0)
    mids, diff_r2, diff_n, boundary, jumps = [], 0.0, 0, [], []
    for h in range(DAYS * 24):
        logs = np.log(path.sample(START + h * HOUR, TICK, 36_001))  # the last value starts the next chunk
        mids.append(logs[18_000])
        for name, step in (("100ms", 1), ("1s", 10), ("1min", 600)):
            r = np.diff(logs[::step])
            sums[name] += sumsq(r)
            counts[name] += len(r)
        r = np.diff(logs)
        big = np.abs(r) > 8 * sd_step  # a diffusion step never moves 8 sd in 17 M tries (p ~ 1e-15 each)
        jumps.extend(r[big].tolist())
        diff_r2 += sumsq(r[~big])
        diff_n += int((~big).sum())
        if not big[-1]:
            boundary.append(float(r[-1] / sd_step) ** 2)
    r_h = np.diff(mids)
    sums["1h mid-chunk"], counts["1h mid-chunk"] = sumsq(r_h), len(r_h)
    return Run(path, sums, counts, diff_r2, diff_n, boundary, jumps)


# --- determinism -----------------------------------------------------------------------------------------

def test_same_seed_same_prices_whatever_the_query_order() -> None:
    times = [START + timedelta(seconds=random.Random(1).uniform(0, 5 * 3600)) for _ in range(200)]
    times += [START + k * HOUR for k in range(6)] + [START + 3 * HOUR - TICK]
    forward = [BtcPath(5, START, SPOT).price_at(t) for t in sorted(times)]
    shuffled = sorted(times, key=lambda t: random.Random(str(t)).random())
    tight = BtcPath(5, START, SPOT, cache_chunks=1)  # forces interiors to be regenerated
    again = dict(zip(shuffled, (tight.price_at(t) for t in shuffled), strict=True))
    far_first = BtcPath(5, START, SPOT)
    far_first.price_at(START + 40 * HOUR)
    assert [again[t] for t in sorted(times)] == forward
    assert [far_first.price_at(t) for t in sorted(times)] == forward
    assert [BtcPath(6, START, SPOT).price_at(t) for t in sorted(times)] != forward


def test_sample_is_price_at_at_each_time_and_the_path_starts_at_spot() -> None:
    path = BtcPath(5, START, SPOT)
    t0 = START + timedelta(minutes=59, seconds=30, microseconds=123_456)
    every = timedelta(milliseconds=1_337)
    assert path.sample(t0, every, 50).tolist() == [path.price_at(t0 + k * every) for k in range(50)]
    across = path.sample(START + 2 * HOUR - TICK, TICK, 3)  # the boundary value read inside an interior
    assert across.tolist() == [BtcPath(5, START, SPOT).price_at(START + 2 * HOUR + (k - 1) * TICK) for k in range(3)]
    assert path.price_at(START) == pytest.approx(SPOT, rel=1e-12)
    assert path.price_at(START + TICK / 2) == path.price_at(START)  # the last print, not an interpolation


def test_times_before_start_or_naive_and_impossible_jump_shares_are_refused() -> None:
    path = BtcPath(5, START, SPOT)
    with pytest.raises(ValueError, match="before the BTC path's start"):
        path.price_at(START - timedelta(microseconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        path.price_at(datetime(2026, 11, 23, 1))
    with pytest.raises(BtcTruthError, match="lower jump_rate_per_day"):
        BtcPath(5, START, SPOT, vol=0.1, jump_rate_per_day=10, jump_sd=0.01)


# --- volatility and jumps --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(INTERVALS_S))
def test_realised_vol_is_the_stated_vol_at_every_interval(run: Run, name: str) -> None:
    dt = INTERVALS_S[name] / YEAR_S
    mean_r2 = run.sum_r2[name] / run.count[name]
    se = squared_return_se(run.path, INTERVALS_S[name], run.count[name])
    assert abs(mean_r2 - run.path.vol**2 * dt) <= SD_LIMIT * se, (name, math.sqrt(mean_r2 / dt))


def test_hourly_vol_over_many_chunk_boundaries() -> None:
    """20,000 hours cost only chunk summaries; checks the start-price chain the interiors are pinned to."""
    path = BtcPath(12, START, SPOT)
    r = np.diff(np.log(path.sample(START, HOUR, 20_001)))
    se = squared_return_se(path, 3600, len(r))
    assert abs(sumsq(r) / len(r) - path.vol**2 * 3600 / YEAR_S) <= SD_LIMIT * se


def test_diffusion_carries_the_documented_share_and_chunks_join_without_a_gap(run: Run) -> None:
    sig2 = model(run.path)[0]
    per_step = run.diffusion_r2 / run.diffusion_n / (sig2 * 0.1 / YEAR_S)
    assert abs(per_step - 1) <= SD_LIMIT * math.sqrt(2 / run.diffusion_n)
    # A bridge pinned to the wrong end would jump ~190 sd here; an honest join is one ordinary step.
    assert abs(np.mean(run.boundary_z2) - 1) <= SD_LIMIT * math.sqrt(2 / len(run.boundary_z2))


def test_jumps_exist_at_the_stated_rate_and_size(run: Run) -> None:
    sd_step = math.sqrt(model(run.path)[0] * 0.1 / YEAR_S)
    p_seen = 2 * (1 - NormalDist().cdf(8 * sd_step / run.path.jump_sd))
    expected = run.path.jump_rate_per_day * DAYS * p_seen
    assert abs(len(run.jumps) - expected) <= SD_LIMIT * math.sqrt(expected)
    mean_j2 = float(np.mean(np.square(run.jumps))) / run.path.jump_sd**2
    assert abs(mean_j2 - 1) <= SD_LIMIT * math.sqrt(2 / len(run.jumps))


def test_frequent_small_jumps_have_the_stated_rate_and_variance() -> None:
    """Two days at 400 jumps a day of 10 bp (58 % of vol²): ~800 jumps pin the count and the jump variance."""
    path = BtcPath(13, START, SPOT, jump_rate_per_day=400, jump_sd=0.001)
    sd_step = math.sqrt(model(path)[0] * 0.1 / YEAR_S)
    r = np.diff(np.log(path.sample(START, TICK, 48 * 36_000 + 1)))
    jumps = r[np.abs(r) > 8 * sd_step]
    rate = path.jump_rate_per_day * 2
    p_seen = 2 * (1 - NormalDist().cdf(8 * sd_step / path.jump_sd))
    assert abs(len(jumps) - rate * p_seen) <= SD_LIMIT * math.sqrt(rate)
    # Σ J² over the seen jumps vs λT s² (the unseen ones, |J| < 0.05 s, carry < 1e-4 of it); Var = 3 λT s⁴.
    assert abs(sumsq(jumps) / (rate * path.jump_sd**2) - 1) <= SD_LIMIT * math.sqrt(3 / rate)


def test_without_jumps_no_step_is_a_jump_and_the_vol_is_all_diffusion() -> None:
    path = BtcPath(11, START, SPOT, jump_rate_per_day=0)
    r = np.diff(np.log(path.sample(START, TICK, 2 * 36_000 + 1)))
    sd_step = path.vol * math.sqrt(0.1 / YEAR_S)
    assert path.diffusion_vol == path.vol
    assert np.abs(r).max() < 8 * sd_step
    assert abs(sumsq(r) / len(r) / sd_step**2 - 1) <= SD_LIMIT * math.sqrt(2 / len(r))


# --- settlement ------------------------------------------------------------------------------------------

def test_settlement_is_the_average_of_the_sixty_prints_up_to_the_close() -> None:
    closes = [START + timedelta(hours=1 + k, minutes=7 * k) for k in range(20)]
    endpoint_differs = 0
    for seed, close in enumerate(closes):
        path = BtcPath(seed, START, SPOT)
        prints = [path.price_at(close - timedelta(seconds=60) + timedelta(seconds=k)) for k in range(1, 61)]
        assert path.settlement_price(close) == round(sum(prints) / 60, 2)
        endpoint_differs += abs(path.settlement_price(close) - path.price_at(close)) > 0.01
    assert endpoint_differs >= 18  # the average, not the path's endpoint


def test_after_the_close_the_ideal_is_the_outcome_with_cents_semantics() -> None:
    path = BtcPath(3, START, SPOT)
    close = START + 2 * HOUR
    settle = path.settlement_price(close)
    for now in (close, close + timedelta(minutes=3)):
        assert path.ideal_above(settle - 0.01, close, now) == 1.0
        assert path.ideal_above(settle, close, now) == 0.0
        assert path.ideal_between(settle, settle + 249.99, close, now) == 1.0
        assert path.ideal_between(settle + 0.01, settle + 250, close, now) == 0.0
        assert path.ideal_below(settle + 0.01, close, now) == 1.0


# --- the ideal probability -------------------------------------------------------------------------------

@dataclass
class State:
    """What the path has shown by `now`: the prints already taken, the price now and the prints to come."""

    known_sum: float
    spot: float
    gaps_s: np.ndarray  # seconds from now to the first remaining print, then between remaining prints


def state(path: BtcPath, close: datetime, now: datetime) -> State:
    prints = [close - timedelta(seconds=60 - k) for k in range(1, 61)]
    known = [t for t in prints if t <= now]
    future = [t for t in prints if t > now]
    gaps = [(future[0] - now).total_seconds()] + [1.0] * (len(future) - 1)
    return State(sum(path.price_at(t) for t in known), path.price_at(now), np.array(gaps))


def simulate_log_moves(path: BtcPath, s: State, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per path: the first gap's diffusion move, and every print's log move from now less that first move."""
    sig2, mu, lam = model(path)
    dt = s.gaps_s / YEAR_S
    jumps = rng.standard_normal((n, len(dt))) * path.jump_sd * np.sqrt(rng.poisson(lam * dt, size=(n, len(dt))))
    diffusion = mu * dt + rng.standard_normal((n, len(dt))) * np.sqrt(sig2 * dt)
    first = diffusion[:, 0].copy()
    diffusion[:, 0] = 0.0
    return first, np.cumsum(diffusion + jumps, axis=1)


def mc_above(path: BtcPath, s: State, strikes: list[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """P(settle > K) by Monte Carlo, integrating the first gap's Gaussian move exactly (conditional MC).

    settle > K (K in cents) ⟺ the average ≥ K + 0.005 ⟺ first move ≥ log((60 (K + 0.005) - known) / (S W)).
    """
    sig2, mu, _ = model(path)
    _, rest = simulate_log_moves(path, s, n, rng)
    w = np.exp(rest).sum(axis=1)
    dt0 = s.gaps_s[0] / YEAR_S
    normal = NormalDist(mu * dt0, math.sqrt(sig2 * dt0))
    out = []
    for k in strikes:
        need = np.log((60 * (k + 0.005) - s.known_sum) / (s.spot * w))
        out.append(1 - float(np.mean([normal.cdf(x) for x in need])))
    return np.array(out)


def brute_force_settles(path: BtcPath, s: State, n: int, rng: np.random.Generator) -> np.ndarray:
    """Simulated settlement prices (rounded to cents), nothing integrated analytically."""
    first, rest = simulate_log_moves(path, s, n, rng)
    return np.round((s.known_sum + s.spot * np.exp(first[:, None] + rest).sum(axis=1)) / 60, 2)


@pytest.mark.parametrize("before", [timedelta(hours=1), timedelta(minutes=2), timedelta(seconds=61),
                                    timedelta(seconds=30)])
def test_ideal_above_matches_monte_carlo(before: timedelta) -> None:
    path = BtcPath(3, START, SPOT)
    close = START + 2 * HOUR
    now = close - before
    s = state(path, close, now)
    remaining = len(s.gaps_s)
    centre = (s.known_sum + s.spot * remaining) / 60
    sd = s.spot * path.vol * math.sqrt(max(before.total_seconds() - 40, 10) / YEAR_S) * remaining / 60
    strikes = [round(centre + z * sd, 2) - 0.01 for z in (-2, -1, -0.3, 0, 0.3, 1, 2)]
    ideal = np.array([path.ideal_above(k, close, now) for k in strikes])
    reference = mc_above(path, s, strikes, 40_000, np.random.default_rng(7))
    assert np.abs(ideal - reference).max() <= 0.005, (ideal, reference)
    assert 0.05 < ideal[0] - ideal[-1]  # the strikes span the distribution: the check is not vacuous


def test_ideal_above_and_between_match_brute_force_inside_the_window() -> None:
    path = BtcPath(4, START, SPOT)
    close = START + 2 * HOUR
    now = close - timedelta(seconds=25)
    settles = brute_force_settles(path, state(path, close, now), 100_000, np.random.default_rng(8))
    lo = round(float(np.quantile(settles, 0.3)), 2)
    for k in (lo - 0.01, float(np.quantile(settles, 0.6)) // 1 - 0.01):
        assert abs(path.ideal_above(k, close, now) - float(np.mean(settles > k))) <= 0.01
    hi = lo + 24.99
    assert abs(path.ideal_between(lo, hi, close, now) - float(np.mean((settles >= lo) & (settles <= hi)))) <= 0.01


@pytest.mark.parametrize("before", [timedelta(minutes=30), timedelta(seconds=20)])
def test_range_brackets_and_tails_add_up_to_one(before: timedelta) -> None:
    path = BtcPath(9, START, SPOT)
    close = START + 2 * HOUR
    now = close - before
    low = round(path.price_at(now) / 250) * 250 - 5 * 250
    p = [path.ideal_below(low, close, now)]
    p += [path.ideal_between(a, a + 249.99, close, now) for a in range(low, low + 2500, 250)]
    p += [path.ideal_above(low + 2500 - 0.01, close, now)]
    assert math.fsum(p) == pytest.approx(1.0, abs=1e-9)
    a = low + 1000
    assert p[5] == pytest.approx(path.ideal_above(a - 0.01, close, now) - path.ideal_above(a + 249.99, close, now))


def test_ideal_above_is_calibrated_across_seeds() -> None:
    """Mean ideal vs outcome frequency per strike and time, over 1,000 seeded paths; and it beats a model that
    prices the endpoint, so the comparison can tell a right law from a wrong one."""
    close = START + timedelta(minutes=10)
    strikes = [SPOT + d - 0.01 for d in (-200, -50, 0, 50, 200)]
    nows = (close - timedelta(minutes=5), close - timedelta(seconds=20))
    ideal = np.zeros((1000, len(nows), len(strikes)))
    endpoint = np.zeros_like(ideal)
    won = np.zeros_like(ideal, dtype=bool)
    for seed in range(1000):
        path = BtcPath(seed, START, SPOT)
        settle = path.settlement_price(close)
        for i, now in enumerate(nows):
            sd = path.vol * math.sqrt((close - now).total_seconds() / YEAR_S)
            for j, k in enumerate(strikes):
                ideal[seed, i, j] = path.ideal_above(k, close, now)
                endpoint[seed, i, j] = 1 - NormalDist().cdf((math.log(k / path.price_at(now)) + sd * sd / 2) / sd)
                won[seed, i, j] = settle > k
    bound = SD_LIMIT * np.sqrt((ideal * (1 - ideal)).sum(axis=0)) / len(ideal) + 0.002
    assert np.all(np.abs(won.mean(axis=0) - ideal.mean(axis=0)) <= bound)
    bins = np.minimum((ideal * 10).astype(int), 9)
    for b in range(10):
        p, w = ideal[bins == b], won[bins == b]
        if len(p) < 30:
            continue
        assert abs(w.mean() - p.mean()) <= SD_LIMIT * math.sqrt((p * (1 - p)).sum()) / len(p) + 0.01, b
    late = (slice(None), 1)
    assert np.mean((ideal[late] - won[late]) ** 2) < 0.8 * np.mean((endpoint[late] - won[late]) ** 2)
