"""Weather inputs: Open-Meteo ensembles → members' climate-day maxima on `md.wx.forecast.<city>`, and NWS
observations → the running climate-day max on `md.wx.obs.<station>`; both stored in PostgreSQL.

Polling is slow on purpose (A5: the free tier allows 10,000 calls a day and an ensemble request for four
models weighs ~14 calls) and backs off with jitter on errors and 429s (`libs.common.backoff`). A
malformed response is logged and skipped; the next poll tries again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import subjects
from libs.common.backoff import Backoff, sleep_unless_stopped
from libs.common.climate import c_to_f, climate_day, climate_day_bounds, member_daily_max, standard_offset
from libs.common.config import Mode
from libs.common.db import feeds as tables
from libs.common.db.upsert import insert_if_new, insert_many_if_new
from libs.common.events import Event, WxForecast, WxMember, WxObservation, utcnow
from libs.common.health import Freshness
from libs.common.logs import get_logger
from libs.common.stations import Station

log = get_logger(__name__)
Emit = Callable[[str, Event], Awaitable[None]]

ENSEMBLE_URL = "https://ensemble-api.open-meteo.com"
FORECAST_URL = "https://api.open-meteo.com"
NWS_URL = "https://api.weather.gov"
DEFAULT_MODELS = ("ncep_gefs025", "ecmwf_ifs025_ensemble", "dwd_icon_global_eps", "gem_global_ensemble")
# `temperature_2m[_memberNN][_<model>]` (A2); the suffix is the server's canonical name, which has changed before.
MEMBER_KEY = re.compile(r"^temperature_2m(?:_member(\d\d))?(?:_(.+))?$")
# MADIS QC flags we trust: V verified, C coarse pass, S screened; Z (no QC) is accepted when the value exists.
BAD_QC = {"X", "Q", "B", "T"}


class WeatherDataError(ValueError):
    """A weather response we cannot use (missing keys, wrong shapes, bad JSON)."""


def _hours_in_day(times: list[datetime], tz: str, day: date) -> int:
    start, end = climate_day_bounds(day, tz)
    return sum(1 for t in times if start <= t < end)


def parse_ensemble(data: Any, fallback_model: str) -> tuple[list[datetime], dict[str, np.ndarray], str]:
    """Times (UTC) and per-model (n_times × n_members) arrays in the response's unit; raises WeatherDataError."""
    try:
        hourly = data["hourly"]
        times = [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in hourly["time"]]
        units = data.get("hourly_units") or {}
        unit = units.get("temperature_2m") or next(
            (v for k, v in units.items() if k.startswith("temperature_2m")), "°C")
        if not isinstance(unit, str):
            raise TypeError(f"unit {unit!r} is not text")
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # AttributeError: hourly_units not an object
        raise WeatherDataError(f"ensemble response lacks hourly.time: {e}") from None
    columns: dict[str, dict[int, list[Any]]] = {}
    for key, series in hourly.items():
        m = MEMBER_KEY.match(key)
        if not m or key == "time":
            continue
        member = int(m.group(1) or 0)
        model = m.group(2) or fallback_model
        if not isinstance(series, list) or len(series) != len(times):
            raise WeatherDataError(f"{key} has {len(series) if isinstance(series, list) else '?'} values "
                                   f"for {len(times)} times")
        columns.setdefault(model, {})[member] = series
    if not columns:
        raise WeatherDataError("ensemble response has no temperature_2m members")
    try:
        arrays = {model: np.array([[np.nan if v is None else float(v) for v in cols[k]] for k in sorted(cols)],
                                  dtype=float).T for model, cols in columns.items()}
    except (TypeError, ValueError, OverflowError) as e:  # a value that is not a number: refuse the run, never guess
        raise WeatherDataError(f"ensemble value is not a number: {e}") from None
    return times, arrays, unit


def reduce_ensemble(times: list[datetime], arrays: dict[str, np.ndarray], unit: str, st: Station, now: datetime, *,
                    mode: Mode, provider: str, digest: str) -> tuple[WxForecast, list[dict[str, Any]]]:
    """An ensemble response as the desk uses it: each member's max over today's and tomorrow's climate days,
    and each member's hourly trace over those days (°F, 0.1) so the model can condition on the hours left;
    plus the rows to store. `digest` identifies the content (the run id)."""
    to_f = (lambda a: a) if "F" in unit else (lambda a: a * 9 / 5 + 32)
    today = climate_day(now, st.tz)
    days = [today, today + timedelta(days=1)]
    members: list[WxMember] = []
    rows: list[dict[str, Any]] = []
    # The run id is the content's hash: polling an unchanged model run again stores and publishes
    # nothing new (JetStream dedupes on the id), and a new run is a new id whenever it arrives.
    run_id = f"wx:{provider}:{st.icao}:{digest}"
    covered = {day: _hours_in_day(times, st.tz, day) for day in days}
    window_start, window_end = climate_day_bounds(today, st.tz)[0], climate_day_bounds(days[-1], st.tz)[1]
    keep = [i for i, t in enumerate(times) if window_start <= t < window_end]
    traces: dict[str, tuple[float, ...]] = {}
    for model, arr in sorted(arrays.items()):
        values = to_f(arr)
        maxima = member_daily_max(times, values, st.tz, days)
        for day in days:
            for k, v in enumerate(maxima[day]):
                if np.isfinite(v):
                    members.append(WxMember(model=model, member=k, target_date=day, tmax_f=round(float(v), 2)))
                rows.append({"run_id": run_id, "model": model, "member": k, "target_date": day,
                             "tmax_f": float(v) if np.isfinite(v) else None, "hours_covered": covered[day]})
        if keep and keep == list(range(keep[0], keep[-1] + 1)):
            for k in range(values.shape[1]):
                trace = np.round(values[keep, k], 1)  # after rounding: 1.7e308 rounds to inf
                if np.isfinite(trace).all():  # JSON has no NaN: a gappy member keeps its maxima only
                    traces[f"{model}:{k}"] = tuple(trace.tolist())
    if not members:
        raise WeatherDataError("no member has a complete climate day")
    event = WxForecast(id=run_id, ts_event=now, mode=mode, city=st.city, station=st.icao, run_time=now,
                       members=tuple(members), trace_start=times[keep[0]] if traces else None, traces=traces)
    return event, rows


def _digest(data: Any) -> str:
    """The content hash that names a run; orjson refuses integers beyond 64 bits, which json reads fine."""
    try:
        raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        raw = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


class _Poller:
    """Shared polling loop: interval, back-off on failures, freshness."""

    name = "poller"

    def __init__(self, interval_s: float, freshness: Freshness | None, max_age_s: float,
                 rng: random.Random | None = None) -> None:
        self.interval_s = interval_s
        self.freshness = freshness
        # A failed poll is tried again after 5–10 s, doubling, but never later than the next regular poll.
        self.backoff = Backoff(base_s=10.0, cap_s=interval_s, rng=rng)
        self.malformed = 0
        if freshness is not None:
            freshness.expect(self.name, max_age_s)

    @property
    def failures(self) -> int:
        """Consecutive failed polls (0 after a success)."""
        return self.backoff.failures

    async def poll_once(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until stopped: every `interval_s`, sooner (backing off) after a failure."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except (httpx.HTTPError, WeatherDataError) as e:
                delay = self.backoff.next_delay()
                log.warning("weather_poll_failed", input=self.name, error=str(e), failures=self.failures,
                            retry_in_s=round(delay, 1))
            else:
                self.backoff.reset()
                delay = self.interval_s
            if await sleep_unless_stopped(stop, delay):
                return

    async def _get(self, client: httpx.AsyncClient, url: str, params: dict[str, Any], what: str) -> Any:
        resp = await client.get(url, params=params)
        if resp.status_code >= 400:
            raise httpx.HTTPStatusError(f"{what}: HTTP {resp.status_code}", request=resp.request, response=resp)
        try:
            return resp.json()
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the json module can read
            self.malformed += 1
            raise WeatherDataError(f"{what}: response is not JSON") from None


class EnsemblePoller(_Poller):
    """One station's ensemble forecast: each member's max over today's and tomorrow's climate days."""

    def __init__(self, station: Station, emit: Emit, *, mode: Mode, client: httpx.AsyncClient,
                 ensemble_url: str = ENSEMBLE_URL, forecast_url: str = FORECAST_URL,
                 models: tuple[str, ...] = DEFAULT_MODELS, sessions: async_sessionmaker[AsyncSession] | None = None,
                 freshness: Freshness | None = None, clock: Callable[[], datetime] = utcnow,
                 interval_s: float = 1800.0, provider: str = "open-meteo") -> None:
        self.name = f"ensemble_{station.city}"
        super().__init__(interval_s, freshness, max_age_s=3 * interval_s)
        self.station = station
        self.emit = emit
        self.mode = mode
        self.client = client
        self.ensemble_url = ensemble_url.rstrip("/")
        self.forecast_url = forecast_url.rstrip("/")
        self.models = models
        self.sessions = sessions
        self.clock = clock
        self.provider = provider

    async def poll_once(self) -> WxForecast:
        """Fetch, reduce to climate-day maxima, publish and store one run."""
        now = self.clock()
        st = self.station
        params = {"latitude": st.lat, "longitude": st.lon, "hourly": "temperature_2m", "models": ",".join(self.models),
                  "temperature_unit": "fahrenheit", "timezone": "GMT", "forecast_days": 3, "past_days": 1}
        data = await self._get(self.client, f"{self.ensemble_url}/v1/ensemble", params, "ensemble")
        try:
            times, arrays, unit = parse_ensemble(data, self.models[0])
        except WeatherDataError:
            self.malformed += 1
            raise
        event, rows = reduce_ensemble(times, arrays, unit, st, now, mode=self.mode, provider=self.provider,
                                      digest=_digest(data))
        run_id = event.id
        today = climate_day(now, st.tz)
        deterministic = await self._deterministic([today, today + timedelta(days=1)])
        event = event.model_copy(update={"deterministic": {d.isoformat(): v for d, v in deterministic.items()}})
        await self._store(run_id, now, sorted(arrays), rows)
        await self.emit(subjects.md_wx_forecast(st.city), event)
        if self.freshness is not None:
            self.freshness.mark(self.name)
        log.info("ensemble_run", station=st.icao, members=len(event.members), models=len(arrays))
        return event

    async def _deterministic(self, days: list[date]) -> dict[date, float]:
        st = self.station
        params = {"latitude": st.lat, "longitude": st.lon, "hourly": "temperature_2m",
                  "temperature_unit": "fahrenheit", "timezone": "GMT", "forecast_days": 3, "past_days": 1}
        try:
            data = await self._get(self.client, f"{self.forecast_url}/v1/forecast", params, "forecast")
            times, arrays, _ = parse_ensemble(data, "best_match")
        except (httpx.HTTPError, WeatherDataError) as e:
            log.warning("deterministic_forecast_unavailable", station=st.icao, error=str(e))
            return {}
        maxima = member_daily_max(times, next(iter(arrays.values())), st.tz, days)
        return {d: round(float(v[0]), 2) for d, v in maxima.items() if np.isfinite(v[0])}

    async def _store(self, run_id: str, now: datetime, models: list[str], rows: list[dict[str, Any]]) -> None:
        if self.sessions is None:
            return
        st = self.station
        async with self.sessions() as s, s.begin():
            await insert_if_new(s, tables.WeatherForecastRun, {
                "run_id": run_id, "provider": self.provider, "station": st.icao, "city": st.city, "models": models,
                "fetched_at": now, "latitude": st.lat, "longitude": st.lon,
                "lst_offset_minutes": int(standard_offset(st.tz, now.date()).total_seconds() // 60)}, key=["run_id"])
            await insert_many_if_new(s, tables.WeatherEnsembleMember, rows,
                                     key=["run_id", "model", "member", "target_date"])


class ObservationPoller(_Poller):
    """One station's NWS observations and the running max of the current climate day."""

    def __init__(self, station: Station, emit: Emit, *, mode: Mode, client: httpx.AsyncClient,
                 nws_url: str = NWS_URL, user_agent: str, sessions: async_sessionmaker[AsyncSession] | None = None,
                 freshness: Freshness | None = None, clock: Callable[[], datetime] = utcnow,
                 interval_s: float = 300.0) -> None:
        self.name = f"obs_{station.icao}"
        super().__init__(interval_s, freshness, max_age_s=max(3 * interval_s, 5400))
        self.station = station
        self.emit = emit
        self.mode = mode
        self.client = client
        self.nws_url = nws_url.rstrip("/")
        self.user_agent = user_agent
        self.sessions = sessions
        self.clock = clock
        self.seen: set[datetime] = set()

    async def poll_once(self) -> list[WxObservation]:
        """Fetch the current climate day's observations; publish and store the new ones in time order."""
        st = self.station
        now = self.clock()
        day = climate_day(now, st.tz)
        start = datetime.combine(day, datetime.min.time(), UTC) - standard_offset(st.tz, day)
        self.client.headers["User-Agent"] = self.user_agent
        data = await self._get(self.client, f"{self.nws_url}/stations/{st.icao}/observations",
                               {"start": start.isoformat(), "limit": 500}, "observations")
        try:
            readings = self._readings(data)
        # AttributeError: an object that is a list; OverflowError: a time beyond what datetime holds.
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
            self.malformed += 1
            raise WeatherDataError(f"observations: {e}") from None
        out: list[WxObservation] = []
        running: float | None = None
        rows = []
        for ts, c, qc, raw in sorted(readings, key=lambda r: r[0]):  # by time only: None and floats do not compare
            if climate_day(ts, st.tz) != day:
                continue
            f = None if c is None or qc in BAD_QC else round(c_to_f(c), 1)
            if f is not None:
                running = f if running is None else max(running, f)
            rows.append({"station": st.icao, "observed_at": ts, "climate_date": day, "temperature_c": c,
                         "temperature_f": f, "running_max_f": running, "qc": qc, "source": "nws-api",
                         "raw_message": raw})
            if ts in self.seen:
                continue
            self.seen.add(ts)
            out.append(WxObservation(id=f"obs:{st.icao}:{ts:%Y%m%dT%H%M}", ts_event=ts, mode=self.mode,
                                     station=st.icao, observed_at=ts, climate_date=day, temp_f=f,
                                     running_max_f=running, qc=qc))
        if rows and self.sessions is not None:
            async with self.sessions() as s, s.begin():
                await insert_many_if_new(s, tables.WeatherObservation, rows, key=["station", "observed_at"])
        for ev in out:
            await self.emit(subjects.md_wx_obs(st.icao), ev)
        if self.freshness is not None:
            self.freshness.mark(self.name)
        return out

    @staticmethod
    def _readings(data: Any) -> list[tuple[datetime, float | None, str | None, str | None]]:
        out = []
        for feat in data["features"]:
            p = feat["properties"]
            ts = datetime.fromisoformat(p["timestamp"]).astimezone(UTC)
            if not 1 < ts.year < 9999:  # its climate day needs the days either side
                raise ValueError(f"timestamp {p['timestamp']!r} is out of range")
            temp = p.get("temperature") or {}
            value = temp.get("value")
            if value is not None and temp.get("unitCode", "wmoUnit:degC") != "wmoUnit:degC":
                raise ValueError(f"unexpected temperature unit {temp.get('unitCode')}")
            c = None if value is None else float(value)
            if isinstance(value, bool) or (c is not None and not -150 < c < 150):  # NaN, 1e308, true: no reading
                raise ValueError(f"implausible temperature {value!r} °C")
            qc, raw = temp.get("qualityControl"), p.get("rawMessage")
            if qc is not None and not isinstance(qc, str):
                raise ValueError(f"qualityControl {qc!r} is not a flag")
            out.append((ts, c, qc, raw if isinstance(raw, str) else None))
        return out
