"""The simulator's weather, honest about what a forecast can know (the prediction-quality issue, part 1).

A station's temperature is a forecastable centre curve plus an error no forecast knows in advance:

    T(t) = centre(t) + eps(t) + micro(t)

- `centre` is the day's synoptic level, diurnal range and peak time (peaks vary day to day, 12:30–17:30
  LST), interpolated peak to peak so the curve is continuous across midnight; forecasts know it.
- `eps` is an hourly AR(1) (Ornstein–Uhlenbeck) error with stationary sd `ERROR_SD_F` x the day's
  volatility and timescale `ERROR_TIMESCALE_H`. A model run initialised at `tau` has assimilated
  eps(tau) and nothing later, so its error at lead L has sd ERROR_SD_F * sqrt(1 - exp(-2L/timescale)):
  1.7 °F MAE at 6 h, 2.8 at 24 h, 3.0 at 48 h — the working defaults of
  ../shared/ref/telegram_llm_forecast.md §C1 (day 1 MAE 2.5–3.0 °F, day 2 3.0–3.5; NWS Norman day-1
  RMSE 3.8). The day's volatility multiplier (lognormal, sd 0.3) scales both the error and the ensemble
  spread, which gives the spread–skill correlation and the fatter-than-normal tails of §C1/§C2.
- `micro` is 5-minute noise (the instrument's 2-minute averages wander); the CLI maximum is the
  largest 5-minute value of the climate day in whole °F, so it is at or above every hourly METAR (§C4:
  the hourly METAR max undersamples the true max).

Ensemble members are draws of the error's future from the run's analysis, with a per-model bias and a
dispersion 0.6–0.85 of the true error (ensembles are under-dispersive, §C2); runs start every 6 h and
become available 5 h later. Nothing the fake services serve depends on eps after the moment it was
"known", so the forecasts cannot leak the outcome.

`ideal_pmf` gives the distribution of the day's CLI max given everything up to `now` (the true trace
so far, the error at the last whole hour, the centre curve and the day's volatility): the ideal
forecast the desk is measured against. It is a little better informed than the desk can be (the desk
sees hourly whole-°F METARs, not the 5-minute trace), which is what "ideal" should mean.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from libs.common.climate import climate_day_bounds, standard_offset
from libs.common.stations import STATIONS, Station

ERROR_SD_F = 3.9
ERROR_TIMESCALE_H = 30.0
MICRO_SD_F = 0.35
MICRO_STEP_S = 300
METAR_SLOT = 10  # the hourly METAR at :51 reports the 5-minute value of slot :50
RUN_EVERY_H = 6
RUN_DELAY_H = 5
VOL_SD = 0.3  # log-sd of the day's volatility multiplier
LEVEL_SD_F, LEVEL_PHI = 8.0, 0.6  # the day-to-day synoptic anomaly of the level (forecastable)
ANALYSIS_SD_F = 0.3  # a run's error about the past it assimilated
COOLING_SHARE = 0.62  # share of the peak-to-peak interval spent cooling (min near 06:00 LST)
ORIGIN = date(2025, 1, 1)  # the error process starts here (stationary draw)
IDEAL_PATHS = 2500  # Monte Carlo paths: a bracket's ideal p is good to ±0.01 (1 sd at p = 0.5)

# Canonical ensemble names (data_sources.md A1): members incl. the control, bias °F, dispersion ratio.
MODELS: dict[str, tuple[int, float, float]] = {
    "ncep_gefs025": (31, -0.8, 0.70),
    "ecmwf_ifs025_ensemble": (51, 0.3, 0.85),
    "dwd_icon_global_eps": (40, -0.3, 0.75),
    "gem_global_ensemble": (21, 0.8, 0.60),
}
_PHI = math.exp(-1.0 / ERROR_TIMESCALE_H)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _key(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(_key(*parts))


def _hours(t: datetime) -> float:
    return (t.astimezone(UTC) - _EPOCH).total_seconds() / 3600.0


def round_half_up(x: np.ndarray | float) -> np.ndarray:
    """Whole °F as the CLI reports them (half up)."""
    return np.floor(np.asarray(x, dtype=float) + 0.5)


@dataclass(frozen=True)
class DayShape:
    """A climate day's forecastable centre curve and the size of its unforecastable error."""

    level_f: float  # the centre's peak temperature
    amp_f: float  # diurnal range (peak minus the morning minimum)
    peak_h: float  # LST hour of the peak
    vol: float  # the error's scale today (forecasters see it in the ensemble spread)


def _climatology_f(station: Station, day: date) -> float:
    """A seasonal normal high: warmer south, a larger annual swing north (good enough for a simulator)."""
    mean = 62.0 + (40.5 - station.lat) * 1.1
    swing = 23.0 + (station.lat - 40.5) * 0.5
    doy = day.timetuple().tm_yday
    return mean + swing * math.cos(2 * math.pi * (doy - 200) / 365.25)


class StationWeather:
    """One station's true weather, forecasts and ideal probabilities; deterministic in (seed, station)."""

    def __init__(self, seed: int, station: Station) -> None:
        self.seed = seed
        self.station = station
        self.offset_h = standard_offset(station.tz, ORIGIN).total_seconds() / 3600.0  # LST = UTC + offset
        self._origin_h = _hours(datetime.combine(ORIGIN, datetime.min.time(), UTC))
        self._eps = np.empty(0)
        self._anomaly: list[float] = []
        self._shapes: dict[date, DayShape] = {}
        self._pins: dict[date, float] = {}
        self._shift: dict[date, float] = {}
        self._members: dict[tuple[int, str], np.ndarray] = {}

    # -- the centre curve ------------------------------------------------------------------------------

    def _anomaly_f(self, day: date) -> float:
        n = (day - ORIGIN).days
        if n < 0:  # before the origin: independent stationary draws (only the first hours need them)
            return LEVEL_SD_F * float(_rng(self.seed, self.station.icao, "level", n).standard_normal())
        while len(self._anomaly) <= n:
            k = len(self._anomaly)
            z = float(_rng(self.seed, self.station.icao, "level", k).standard_normal())
            prev = self._anomaly[-1] if self._anomaly else 0.0
            scale = LEVEL_SD_F if not self._anomaly else LEVEL_SD_F * math.sqrt(1 - LEVEL_PHI**2)
            self._anomaly.append(LEVEL_PHI * prev + scale * z)
        return self._anomaly[n]

    def shape(self, day: date) -> DayShape:
        """The day's centre curve parameters (a pinned day's level is shifted to give its pinned max)."""
        got = self._shapes.get(day)
        if got is None:
            g = _rng(self.seed, self.station.icao, "day", day.isoformat())
            amp, peak, z = g.uniform(9.0, 18.0), float(np.clip(g.normal(15.0, 1.0), 12.5, 17.5)), g.standard_normal()
            got = DayShape(level_f=_climatology_f(self.station, day) + self._anomaly_f(day),
                           amp_f=float(amp), peak_h=peak, vol=float(math.exp(VOL_SD * z - VOL_SD**2 / 2)))
            self._shapes[day] = got
        shift = self._shift.get(day, 0.0)
        return got if not shift else DayShape(got.level_f + shift, got.amp_f, got.peak_h, got.vol)

    def centre_f(self, hours: np.ndarray) -> np.ndarray:
        """The forecastable temperature at UTC epoch hours `hours` (vectorised)."""
        lst = np.asarray(hours, dtype=float) + self.offset_h
        dnum = np.floor(lst / 24.0).astype(np.int64)
        out = np.empty(lst.shape)
        for d in np.unique(dnum):
            sel = dnum == d
            days = [date(1970, 1, 1) + timedelta(days=int(d) + k) for k in (-1, 0, 1)]
            prev_s, cur, next_s = (self.shape(x) for x in days)
            x = lst[sel]
            peak_cur = d * 24.0 + cur.peak_h
            after = x >= peak_cur
            a_h = np.where(after, peak_cur, (d - 1) * 24.0 + prev_s.peak_h)
            b_h = np.where(after, (d + 1) * 24.0 + next_s.peak_h, peak_cur)
            u = (x - a_h) / (b_h - a_h)
            la = np.where(after, cur.level_f, prev_s.level_f)
            lb = np.where(after, next_s.level_f, cur.level_f)
            aa = np.where(after, cur.amp_f, prev_s.amp_f)
            ab = np.where(after, next_s.amp_f, cur.amp_f)
            m = COOLING_SHARE
            s = np.where(u <= m, 0.5 + 0.5 * np.cos(np.pi * u / m), 0.5 - 0.5 * np.cos(np.pi * (u - m) / (1 - m)))
            out[sel] = la + (lb - la) * u - (aa + (ab - aa) * u) * (1.0 - s)
        return out

    def vol_at(self, hours: np.ndarray) -> np.ndarray:
        """The error's volatility multiplier at each hour (that of its climate day)."""
        lst = np.asarray(hours, dtype=float) + self.offset_h
        dnum = np.floor(lst / 24.0).astype(np.int64)
        return np.array([self.shape(date(1970, 1, 1) + timedelta(days=int(d))).vol for d in dnum.ravel()]
                        ).reshape(dnum.shape)

    # -- the unforecastable error ----------------------------------------------------------------------

    def eps_at_hour(self, hour: int) -> float:
        """The error at a whole UTC epoch hour (an AR(1) run forward from ORIGIN, cached)."""
        i = int(hour - self._origin_h)
        if i < 0:
            raise ValueError(f"the simulated weather starts on {ORIGIN}")
        if i >= self._eps.size:
            n_old = self._eps.size  # always whole days: blocks are seeded per day, so query order never matters
            n_new = (i // 24 + 31) * 24
            prev = float(self._eps[-1]) if n_old else None
            blocks = [self._eps]
            for start in range(n_old, n_new, 24):
                z = _rng(self.seed, self.station.icao, "eps", start).standard_normal(24)
                vol = self.vol_at(self._origin_h + start + np.arange(24))
                block = np.empty(24)
                for j in range(24):
                    if prev is None:  # the first hour: a stationary draw
                        prev = ERROR_SD_F * float(vol[j]) * float(z[j])
                    else:
                        prev = _PHI * prev + math.sqrt(1 - _PHI**2) * ERROR_SD_F * float(vol[j]) * float(z[j])
                    block[j] = prev
                blocks.append(block)
            self._eps = np.concatenate(blocks)
        return float(self._eps[i])

    def _eps_interp(self, hours: np.ndarray) -> np.ndarray:
        lo = np.floor(hours).astype(np.int64)
        self.eps_at_hour(int(lo.max()) + 1)
        base = (lo - int(self._origin_h)).astype(np.int64)
        frac = hours - lo
        return self._eps[base] * (1 - frac) + self._eps[base + 1] * frac

    def _micro(self, slots: np.ndarray) -> np.ndarray:
        """5-minute noise per slot (seeded per UTC day, 288 slots)."""
        day_of = slots // 288
        out = np.empty(slots.shape)
        for d in np.unique(day_of):
            sel = day_of == d
            out[sel] = _rng(self.seed, self.station.icao, "micro", int(d)).normal(0, MICRO_SD_F, 288)[slots[sel] % 288]
        return out

    def temp_f(self, t: datetime | Iterable[datetime]) -> np.ndarray | float:
        """The true temperature (its 5-minute value) at `t`."""
        single = isinstance(t, datetime)
        ts = [t] if isinstance(t, datetime) else list(t)
        slots = np.array([int((x.astimezone(UTC) - _EPOCH).total_seconds() // MICRO_STEP_S) for x in ts])
        out = self._trace(slots)
        return float(out[0]) if single else out

    def _trace(self, slots: np.ndarray) -> np.ndarray:
        if slots.size == 0:
            return np.empty(0)
        hours = slots * (MICRO_STEP_S / 3600.0)
        return self.centre_f(hours) + self._eps_interp(hours) + self._micro(slots)

    def _day_slots(self, day: date) -> np.ndarray:
        start, end = climate_day_bounds(day, self.station.tz)
        a = int((start - _EPOCH).total_seconds() // MICRO_STEP_S)
        return np.arange(a, a + int((end - start).total_seconds() // MICRO_STEP_S))

    def raw_max_f(self, day: date) -> float:
        """The largest 5-minute value of the climate day (before the CLI's rounding)."""
        return float(self._trace(self._day_slots(day)).max())

    def day_max(self, day: date) -> int:
        """The climate day's CLI maximum, whole °F."""
        return int(round_half_up(self.raw_max_f(day)))

    def pin(self, day: date, max_f: float) -> None:
        """Make the day's CLI max `max_f` (scenarios and tests), by shifting the day's forecastable level.

        The forecasts see the shift too (it is part of the centre), so pinning an outcome leaks nothing."""
        self._pins[day] = float(max_f)
        for _ in range(40):  # the max moves with the level at a slope in (0, 1]: a few secant steps
            moved = False
            for d, want in self._pins.items():
                gap = want - self.raw_max_f(d)
                if abs(gap) > 1e-6:
                    self._shift[d] = self._shift.get(d, 0.0) + gap
                    moved = True
            self._members.clear()
            if not moved:
                return

    # -- what forecasts know ---------------------------------------------------------------------------

    @staticmethod
    def latest_run(now: datetime) -> datetime:
        """The newest model run available at `now` (runs start every 6 h, arrive 5 h later)."""
        avail = now.astimezone(UTC) - timedelta(hours=RUN_DELAY_H)
        return avail.replace(hour=avail.hour - avail.hour % RUN_EVERY_H, minute=0, second=0, microsecond=0)

    def members_f(self, run: datetime, model: str, hours: np.ndarray) -> np.ndarray:
        """A run's members of `model` (rows) at whole UTC epoch `hours` (columns), °F.

        Before the run's start a member is the truth's hourly curve plus a small analysis error; after it, a
        draw of the error's future from eps(run) with the model's dispersion, plus the model's bias."""
        n, bias, ratio = MODELS[model]
        tau = round(_hours(run))
        hours = np.asarray(hours, dtype=np.int64)
        span_end = int(hours.max())
        key = (tau, model)
        paths = self._members.get(key)
        if paths is None or paths.shape[1] < span_end - tau + 1:
            length = max(span_end - tau + 1, 96)
            g = _rng(self.seed, self.station.icao, "run", tau, model)
            vol = self.vol_at(tau + np.arange(length))
            z = g.standard_normal((n, length))
            paths = np.empty((n, length))
            paths[:, 0] = self.eps_at_hour(tau)
            for j in range(1, length):
                paths[:, j] = _PHI * paths[:, j - 1] + math.sqrt(1 - _PHI**2) * ERROR_SD_F * ratio * vol[j] * z[:, j]
            self._members[key] = paths
        past = hours <= tau
        out = np.empty((n, hours.size))
        centre = self.centre_f(hours.astype(float))
        if past.any():
            eps = np.array([self.eps_at_hour(int(h)) for h in hours[past]])
            noise = _rng(self.seed, self.station.icao, "analysis", tau, model).normal(0, ANALYSIS_SD_F,
                                                                                      (n, int(past.sum())))
            out[:, past] = centre[past] + eps + noise
        if (~past).any():
            out[:, ~past] = centre[~past] + paths[:, hours[~past] - tau]
        return out + bias

    # -- the ideal forecast ----------------------------------------------------------------------------

    def metar_f(self, hour: int) -> float:
        """The hourly METAR of UTC epoch hour `hour` (taken at :51, the 5-minute value of :50), whole °F."""
        return float(round_half_up(self._trace(np.array([hour * 12 + METAR_SLOT]))[0]))

    def ideal_pmf(self, day: date, now: datetime, n: int = IDEAL_PATHS) -> dict[int, float]:
        """P(CLI max = k) given what the desk could know at `now`.

        That is: the centre curve and the day's volatility (the ensemble shows both), the error up to the newest
        run's start (its analysis), and every hourly METAR since — whole °F, as reported. A particle filter
        carries the error from the run's start through those METARs; the 5-minute values the METARs do not show
        are drawn, so the CLI max can exceed the largest METAR, as it does in reality."""
        slots = self._day_slots(day)
        now_slot = int((now.astimezone(UTC) - _EPOCH).total_seconds() // MICRO_STEP_S)
        if now_slot >= slots[-1]:
            return {self.day_max(day): 1.0}
        tau = round(_hours(self.latest_run(now)))
        first_h = int(slots[0] // 12)
        last_h = int(slots[-1] // 12) + 1
        start = min(tau, first_h)
        steps = last_h - start
        g = _rng(self.seed, self.station.icao, "ideal", day.isoformat(), now_slot)
        vol = self.vol_at(start + np.arange(steps + 1))
        known = np.array([self.eps_at_hour(start + j) for j in range(max(tau - start, 0) + 1)])
        eps = np.empty((n, steps + 1))
        eps[:, : known.size] = known
        metar_hours = [h for h in range(tau, last_h) if h * 12 + METAR_SLOT <= now_slot]
        observed = {h: self.metar_f(h) for h in metar_hours}
        frac = (METAR_SLOT * MICRO_STEP_S) / 3600.0
        for j in range(known.size, steps + 1):
            eps[:, j] = _PHI * eps[:, j - 1] + math.sqrt(1 - _PHI**2) * ERROR_SD_F * vol[j] * g.standard_normal(n)
            hour = start + j - 1  # its METAR (at :50) lies between eps[j - 1] and eps[j]
            if hour in observed:
                smooth = self.centre_f(np.array([hour + frac]))[0] + eps[:, j - 1] * (1 - frac) + eps[:, j] * frac
                y = observed[hour]
                w = _norm_cdf((y + 0.5 - smooth) / MICRO_SD_F) - _norm_cdf((y - 0.5 - smooth) / MICRO_SD_F)
                total = w.sum()
                if total <= 0:  # no particle explains the report (should not happen): keep the prior
                    continue
                cum = np.cumsum(w / total)
                idx = np.minimum(np.searchsorted(cum, (g.random() + np.arange(n)) / n), n - 1)  # systematic
                eps[:, : j + 1] = eps[idx, : j + 1]
        hours_f = slots * (MICRO_STEP_S / 3600.0) - start
        lo = np.floor(hours_f).astype(np.int64)
        w_hi = (hours_f - lo).astype(np.float32)
        vals = eps[:, lo].astype(np.float32) * (1 - w_hi) + eps[:, lo + 1].astype(np.float32) * w_hi
        vals += self.centre_f(slots * (MICRO_STEP_S / 3600.0)).astype(np.float32)
        vals += g.standard_normal(vals.shape, dtype=np.float32) * np.float32(MICRO_SD_F)
        best = vals.max(axis=1)
        reported = (slots % 12 == METAR_SLOT) & (slots <= now_slot)
        if reported.any():  # a reported METAR is what it is, whatever a path's draw at that slot said
            best = np.maximum(vals[:, ~reported].max(axis=1), float(round_half_up(self._trace(slots[reported])).max()))
        ks, counts = np.unique(round_half_up(best).astype(np.int64), return_counts=True)
        return {int(k): c / n for k, c in zip(ks, counts, strict=True)}


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7; numpy has no erf)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


class WeatherTruth:
    """Every station's weather for one seed; `maxima` pins days' CLI maxima (scenarios, tests)."""

    def __init__(self, seed: int, maxima: dict[tuple[str, date], float] | None = None,
                 stations: tuple[Station, ...] = STATIONS) -> None:
        self.seed = seed
        self._by_icao = {s.icao: s for s in stations}
        self._stations: dict[str, StationWeather] = {}
        for (icao, day), mx in (maxima or {}).items():
            self.pin(icao, day, mx)

    def station(self, icao: str) -> StationWeather:
        """One station's weather (created on first use)."""
        sw = self._stations.get(icao)
        if sw is None:
            sw = self._stations[icao] = StationWeather(self.seed, self._by_icao[icao])
        return sw

    def add_station(self, station: Station) -> None:
        """Know a station a scenario names (a known icao keeps its table entry)."""
        self._by_icao.setdefault(station.icao, station)

    def pin(self, icao: str, day: date, max_f: float) -> None:
        """Make a climate day's CLI max `max_f`."""
        self.station(icao).pin(day, max_f)

    def day_max(self, icao: str, day: date) -> int:
        """The climate day's CLI maximum, whole °F."""
        return self.station(icao).day_max(day)

    def temp_f(self, station: Station, t: datetime) -> float:
        """The true temperature at `t`."""
        return float(self.station(station.icao).temp_f(t))

    def ideal_pmf(self, icao: str, day: date, now: datetime, n: int = IDEAL_PATHS) -> dict[int, float]:
        """P(CLI max = k) given what could be known at `now`."""
        return self.station(icao).ideal_pmf(day, now, n)


def bracket_mass(pmf: dict[int, float], lo: float, hi: float) -> float:
    """P(lo <= max <= hi) for whole-degree bounds (±inf for tails)."""
    return float(sum(p for k, p in pmf.items() if lo <= k <= hi))
