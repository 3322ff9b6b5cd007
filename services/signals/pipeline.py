"""From market data to signals: keeps the latest markets, books, forecasts, observations and spot, and turns a
book or input change into a fee-aware signal when the edge or probability changed materially.

The models are pure functions (weather_model, btc_model, edge); this module only holds state, decides when
to emit, and counts every opportunity it suppresses by reason, so "why didn't it signal?" has an answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from libs.common import subjects
from libs.common.climate import climate_day, climate_day_bounds
from libs.common.config import Mode, RiskLimits
from libs.common.edge import best_action, edges
from libs.common.events import (
    BookUpdate,
    MarketDefinition,
    ModelParamUpdate,
    Signal,
    SpotTick,
    WxForecast,
    WxObservation,
    utcnow,
)
from libs.common.families import family_of
from libs.common.freshness import FreshnessLimits
from libs.common.logs import get_logger
from libs.common.market_view import MarketState, MarketView
from libs.common.money import ONE_DOLLAR
from libs.common.stations import BY_SERIES
from services.signals.btc_model import VenueQuote, composite_spot, ewma_vol, market_probabilities, momentum
from services.signals.weather_model import (
    Bracket,
    WeatherForecastResult,
    WeatherModelError,
    WeatherParams,
    bracket_probabilities,
    excess_probability,
    remaining_maxima,
)

if TYPE_CHECKING:
    from services.signals.llm import LlmAnalyst

MODEL_VERSION = "1"
VALIDITY = timedelta(seconds=60)

log = get_logger(__name__)


@dataclass
class Emitted:
    """What was last signalled for a market, for the material-change test."""

    p_model: float
    action: str
    edge: int
    at: float


@dataclass
class ModelP:
    """A model probability with its confidence and the inputs it came from."""

    p: float
    confidence: float
    model: str
    inputs: dict[str, Any]
    ts: datetime
    p_raw: float | None = None  # before calibration, where the model is calibrated (llm)
    action: str | None = None  # the model's own call, where it makes one (llm: its Trader's)


def input_limits(f: FreshnessLimits) -> dict[str, float]:
    """The heartbeat inputs of the signals service and their maximum ages."""
    return {"md_book": f.book_s, "md_spot": f.spot_s, "md_wx_forecast": f.forecast_s, "md_wx_obs": f.obs_s}


def _epoch_h(t: datetime) -> float:
    return t.timestamp() / 3600.0


class SignalPipeline:
    """The state and decisions of the signals service (I/O injected).

    Every input is judged by its source's own timestamp against `freshness` (books, spot, forecast runs,
    observations): a replayed or long-buffered input is refused with a reason (`stale_book`, `stale_spot`,
    `stale_forecast`, `stale_obs`), however recently it arrived.
    """

    def __init__(self, emit: Callable[[Signal], Awaitable[None]], *, mode: Mode, risk: RiskLimits,
                 clock: Callable[[], datetime] = utcnow, cooldown_s: float = 5.0, min_dp: float = 0.01,
                 min_dedge: int = 50, freshness: FreshnessLimits | None = None,
                 fair_value_series: frozenset[str] = frozenset(), fair_cooldown_s: float = 1.0) -> None:
        self.emit = emit
        # The market maker's series (KDESK_MM_SERIES): their probability is published even without an edge
        # (action `none`), as the fair value the maker quotes around, at most every `fair_cooldown_s`.
        self.fair_value_series = fair_value_series
        self.fair_cooldown_s = fair_cooldown_s
        self.mode = mode
        self.risk = risk
        self.clock = clock
        self.cooldown_s = cooldown_s
        self.min_dp = min_dp
        self.min_dedge = min_dedge
        self.freshness = freshness or FreshnessLimits()
        self.view = MarketView(self.freshness, clock)
        self.events: dict[str, set[str]] = {}
        self.forecasts: dict[str, WxForecast] = {}  # station -> latest run
        self.obs: dict[str, WxObservation] = {}  # station -> latest
        # station -> (climate day, its readings °F by time): the CLI max can exceed the largest (excess_probability)
        self.readings: dict[str, tuple[date, dict[datetime, float]]] = {}
        self.spot: dict[str, tuple[int, datetime]] = {}  # venue -> (price ticks, venue's timestamp)
        self.spot_path: deque[tuple[float, float]] = deque(maxlen=3600)  # (venue epoch s, composite USD)
        self._vol_key: tuple[int, float | None] | None = None
        self._vol: tuple[float, float] = (0.5, 0.0)
        self.weather_p: dict[str, ModelP] = {}
        self._ladder_gen: dict[str, int] = {}  # event -> number of the newest ladder started (threads may overlap)
        self.station_bias: dict[str, float] = {}  # station -> forecast bias °F (the resolver fits it)
        self.weather_params = WeatherParams()
        self._traces: dict[str, tuple[str, float, dict[str, np.ndarray]]] = {}  # station -> (run id, start h, arrays)
        self.last: dict[str, Emitted] = {}
        self.suppressed: Counter[str] = Counter()
        self.emitted = 0
        self.ladders: list[tuple[str, list[MarketDefinition], ModelP, dict[str, float]]] = []  # to store
        self.llm: LlmAnalyst | None = None  # the llm family, when configured (services/signals/llm.py)

    # -- inputs ---------------------------------------------------------------------------------

    @property
    def markets(self) -> dict[str, MarketState]:
        """The market view by ticker."""
        return self.view.by_ticker

    async def on_market(self, m: MarketDefinition) -> None:
        """A market definition or lifecycle change.

        A weather market that arrives after its station's forecast is priced now, not at the next run or
        observation (the ladder is per event: a new market changes its neighbours' coverage too)."""
        self.view.on_market(m)
        if self.llm is not None:
            await self.llm.on_market(m)  # a settled llm market is an outcome to calibrate on
        tickers = self.events.setdefault(m.event_ticker, set())
        new = m.ticker not in tickers
        tickers.add(m.ticker)
        st = BY_SERIES.get(m.series_ticker)
        if new and st is not None and st.icao in self.forecasts:
            await self._weather_ladder(m.event_ticker, [self.markets[t].defn for t in tickers if t in self.markets])

    async def on_book(self, b: BookUpdate) -> Signal | None:
        """A book changed: re-evaluate that market."""
        st = self.view.on_book(b)
        if st is not None and st.book is not b:
            self.suppressed["older_book"] += 1
            return None
        if self.llm is not None and st is not None and family_of(st.defn.series_ticker) == "llm" \
                and self.view.book_fresh(st, self.clock()):
            top = st.top()
            if top is not None:
                self.llm.consider(st.defn, top.best_yes_bid, top.yes_ask)
        return await self.evaluate(b.ticker)

    async def on_forecast(self, f: WxForecast) -> list[Signal]:
        """A new ensemble run: recompute its station's ladders and re-evaluate them."""
        self.forecasts[f.station] = f
        return await self._refresh_weather(f.station)

    async def on_obs(self, o: WxObservation) -> list[Signal]:
        """A new observation: the running max may rule brackets out."""
        prev = self.obs.get(o.station)
        self.obs[o.station] = o
        self._remember(o)
        if prev is not None and prev.climate_date == o.climate_date and prev.running_max_f == o.running_max_f:
            return []
        return await self._refresh_weather(o.station)

    def _remember(self, o: WxObservation) -> None:
        """Keep the newest climate day's readings of each station."""
        day, seen = self.readings.get(o.station, (o.climate_date, {}))
        if o.climate_date > day:
            day, seen = o.climate_date, {}
        elif o.climate_date < day:
            return
        if o.temp_f is not None:
            seen[o.observed_at] = o.temp_f
        self.readings[o.station] = (day, seen)

    async def on_param(self, p: ModelParamUpdate) -> list[Signal]:
        """A fitted parameter from the resolver; a station's bias re-prices its ladders at once.

        `weather_params` (scope `all`) carries refitted `WeatherParams` fields in `params` (benchmarks/
        fit_weather.py's procedure on real resolved days): applied to every station's next ladder. A field the
        model does not know or a value it cannot use is refused whole, and the parameters in use stay."""
        if p.family == "weather" and p.name == "weather_params":
            return await self._apply_weather_params(p)
        if p.family != "weather" or p.name != "station_bias_f" or not math.isfinite(p.value):
            return []
        if self.station_bias.get(p.scope) == p.value:
            return []
        self.station_bias[p.scope] = p.value
        return await self._refresh_weather(p.scope)

    async def _apply_weather_params(self, p: ModelParamUpdate) -> list[Signal]:
        fields = {f.name: f.type for f in dataclasses.fields(WeatherParams)}
        unknown = sorted(set(p.params) - set(fields))
        bad = sorted(k for k, v in p.params.items() if k in fields and (isinstance(v, bool) or not isinstance(
            v, int | float) or not math.isfinite(v) or v < 0))
        if unknown or bad or not p.params:
            log.warning("weather_params_refused", event_id=p.id, unknown=unknown, bad=bad)
            return []
        fitted = dataclasses.replace(self.weather_params, **{
            k: int(v) if fields[k] in ("int", int) else float(v) for k, v in p.params.items()})
        if fitted == self.weather_params:
            return []
        self.weather_params = fitted
        log.info("weather_params_applied", event_id=p.id, n_samples=p.n_samples, **p.params)
        out: list[Signal] = []
        for station in sorted(self.forecasts):
            out += await self._refresh_weather(station)
        return out

    async def on_spot(self, t: SpotTick) -> None:
        """A venue tick: update the composite path used for volatility."""
        # Spaced by the venue's own clock, not ours: a replay or a burst of buffered ticks must not look
        # like a second of price history per tick.
        at = t.ts_event.timestamp()
        self.spot[t.venue] = (t.price, t.ts_event)
        cs = self._composite()
        if cs is not None and (not self.spot_path or at - self.spot_path[-1][0] >= 1.0):
            self.spot_path.append((at, cs[0] / ONE_DOLLAR))

    def input_ages(self) -> dict[str, float | None]:
        """Age of the freshest input of each kind by its source's timestamp (None: none yet), for heartbeats."""
        now = self.clock()
        age = self.freshness.age_s

        def freshest(stamps: list[datetime]) -> float | None:
            return min((age(t, now) for t in stamps), default=None)

        return {"md_book": self.view.freshest_book_age_s(),
                "md_spot": freshest([at for _, at in self.spot.values()]),
                "md_wx_forecast": freshest([f.ts_event for f in self.forecasts.values()]),
                "md_wx_obs": freshest([o.observed_at for o in self.obs.values()])}

    # -- weather --------------------------------------------------------------------------------

    async def _refresh_weather(self, station: str) -> list[Signal]:
        out = []
        for event, tickers in self.events.items():
            defs = [self.markets[t].defn for t in tickers if t in self.markets]
            if not defs or BY_SERIES.get(defs[0].series_ticker, None) is None:
                continue
            if BY_SERIES[defs[0].series_ticker].icao != station:
                continue
            await self._weather_ladder(event, defs)
            for t in tickers:
                s = await self.evaluate(t)
                if s is not None:
                    out.append(s)
        return out

    async def _weather_ladder(self, event: str, defs: list[MarketDefinition]) -> None:
        """Price an event's ladder. The inputs are read here; the model runs in a worker thread (its numpy work
        releases the GIL), because a ladder with hourly traces takes ~40 ms of CPU and, run in the event loop,
        held every book behind it (benchmarks/scale.py: at 2,000 markets, observations re-pricing 48 ladders
        put p99 book-to-signal lag in the hundreds of ms). Books keep being evaluated meanwhile, on the ladder
        before; a ladder that a newer one of the same event overtook is dropped."""
        gen = self._ladder_gen[event] = self._ladder_gen.get(event, 0) + 1
        st = BY_SERIES[defs[0].series_ticker]
        f = self.forecasts.get(st.icao)
        close = defs[0].close_time
        if f is None or close is None:
            return
        day = climate_day(close - timedelta(minutes=1), st.tz)
        members: dict[str, list[float]] = {}
        for m in f.members:
            if m.target_date == day:
                members.setdefault(m.model, []).append(m.tmax_f)
        if not members:
            return
        now = self.clock()
        _, end = climate_day_bounds(day, st.tz)
        obs = self.obs.get(st.icao)
        observed = obs.running_max_f if obs is not None and obs.climate_date == day else None
        brackets = [Bracket(d.ticker, d.strike_type or "", float(d.floor_strike) if d.floor_strike is not None
                            else None, float(d.cap_strike) if d.cap_strike is not None else None) for d in defs]
        prm = self.weather_params
        common: dict[str, Any] = {"bias_f": self.station_bias.get(st.icao, 0.0), "observed_max_f": observed,
                                  "data_age_hours": (now - f.run_time).total_seconds() / 3600}
        traces = self._trace_arrays(f)
        start, _ = climate_day_bounds(day, st.tz)
        got = self.readings.get(st.icao)  # read here: the loop changes it while the thread computes
        recent = sorted(got[1].items())[-prm.nowcast_obs:] if got is not None else []
        if not recent and obs is not None and obs.temp_f is not None:
            recent = [(obs.observed_at, obs.temp_f)]
        readings = list(got[1].values()) if got is not None and got[0] == day else []
        hours_left = max((end - now).total_seconds() / 3600, 0.0)

        def compute() -> WeatherForecastResult | None:
            try:
                if traces is not None:
                    rest = remaining_maxima(traces[0], traces[1], day_start_h=_epoch_h(start),
                                            day_end_h=_epoch_h(end), now_h=_epoch_h(now),
                                            obs=[(_epoch_h(t), v) for t, v in recent],
                                            nowcast_timescale_h=prm.nowcast_timescale_h, path_scale=prm.path_scale,
                                            micro_sd_f=prm.micro_sd_f)
                    excess = excess_probability(readings, prm.micro_sd_f) if readings else prm.past_excess_p
                    offset = prm.peak_offset_f * (min(1.0, hours_left / prm.peak_offset_hours)
                                                  if prm.peak_offset_hours > 0 else 1.0)
                    return bracket_probabilities(rest, brackets, remaining=True, spread_scale=prm.spread_scale,
                                                 peak_offset_f=offset, past_excess_p=excess,
                                                 min_sd_f=prm.min_sd_f, lead_sd_f_per_day=prm.lead_sd_f_per_day,
                                                 tail_weight=prm.tail_weight, tail_scale=prm.tail_scale,
                                                 lead_hours=hours_left, **common)
                else:  # a run without hourly traces: daily maxima, truncated at the observation (steps 1-5)
                    return bracket_probabilities({k: np.array(v) for k, v in members.items()}, brackets,
                                                 lead_hours=max((end - f.run_time).total_seconds() / 3600, 0.0),
                                                 hours_left_in_day=hours_left, **common)
            except WeatherModelError:
                return None

        res = await asyncio.to_thread(compute)
        if self._ladder_gen.get(event) != gen:
            self.suppressed["ladder_superseded"] += len(defs)
            return
        if res is None:
            self.suppressed["model_error"] += len(defs)
            return
        if res.coverage < 0.999:
            self.suppressed["ladder_incomplete"] += len(defs)
            return
        inputs = {"run_id": f.id, "station": st.icao, "climate_date": day.isoformat(), "members": res.n_members,
                  "observed_max_f": observed, "mean_f": round(res.mean_f, 2), "sd_f": round(res.sd_f, 2),
                  "bias_f": self.station_bias.get(st.icao, 0.0)}
        for d in defs:
            self.weather_p[d.ticker] = ModelP(res.probabilities[d.ticker], res.confidence, "wx_ens", inputs, now)
        self.ladders.append((event, defs, self.weather_p[defs[0].ticker], dict(res.probabilities)))

    def _trace_arrays(self, f: WxForecast) -> tuple[float, dict[str, np.ndarray]] | None:
        """The run's member traces as (start epoch hour, model -> members x hours), cached per run."""
        if not f.traces or f.trace_start is None:
            return None
        cached = self._traces.get(f.station)
        if cached is None or cached[0] != f.id:
            rows: dict[str, list[tuple[float, ...]]] = {}
            for key, values in f.traces.items():
                rows.setdefault(key.rsplit(":", 1)[0], []).append(values)
            width = min(len(v) for vs in rows.values() for v in vs)
            cached = self._traces[f.station] = (f.id, _epoch_h(f.trace_start),
                                                {m: np.array([v[:width] for v in vs]) for m, vs in rows.items()})
        return cached[1], cached[2]

    # -- btc ------------------------------------------------------------------------------------

    def _composite(self) -> tuple[int, float] | None:
        now = self.clock()
        cs = composite_spot({v: VenueQuote(p, self.freshness.age_s(at, now)) for v, (p, at) in self.spot.items()},
                            max_age_s=self.freshness.spot_s)
        return None if cs.price_ticks is None else (cs.price_ticks, cs.confidence)

    def model_p(self, ticker: str) -> ModelP | None:
        """The model's current probability for a market (weather: the last ladder; BTC: computed now)."""
        st = self.markets.get(ticker)
        if st is None:
            return None
        if family_of(st.defn.series_ticker) == "weather":
            return self.weather_p.get(ticker)
        return self._btc_p(st.defn)

    def _vol_drift(self) -> tuple[float, float]:
        """Volatility and momentum of the composite path, computed once per new point of it (every BTC market's
        evaluation used to rebuild the whole hour of history: ~1.2 ms each, at 2,000 markets a bottleneck)."""
        key = (len(self.spot_path), self.spot_path[-1][0] if self.spot_path else None)
        if self._vol_key != key:
            vol, drift = 0.5, 0.0  # until half a minute of composite prices exists
            if len(self.spot_path) > 30:
                returns = np.diff(np.log(np.array([p for _, p in self.spot_path])))
                vol = ewma_vol(returns, dt_s=1.0, halflife_s=600.0, floor=0.2, cap=3.0)
                drift = momentum(returns, dt_s=1.0, halflife_s=300.0)
            self._vol_key, self._vol = key, (vol, drift)
        return self._vol

    def _btc_p(self, d: MarketDefinition) -> ModelP | None:
        cs = self._composite()
        if cs is None or d.close_time is None:
            return None
        price, conf = cs
        now = self.clock()
        secs = (d.close_time - now).total_seconds()
        vol, drift = self._vol_drift()
        floor = float(d.floor_strike) if d.floor_strike is not None else math.nan
        cap = float(d.cap_strike) if d.cap_strike is not None else math.nan
        p = float(market_probabilities(price / ONE_DOLLAR, [d.strike_type or "greater"], np.array([floor]),
                                       np.array([cap]), seconds_to_close=secs, vol=vol, drift=drift)[0])
        return ModelP(p, conf, "btc_digital", {"spot": price, "vol": round(vol, 4), "drift": round(drift, 4),
                                               "secs_to_close": round(secs)}, now)

    def _llm_p(self, ticker: str, now: datetime) -> ModelP | None:
        got = self.llm.probability(ticker, now) if self.llm is not None else None
        if got is None:
            return None
        p, p_raw, confidence, action, at, inputs = got
        return ModelP(p, confidence, "llm", inputs, at, p_raw=p_raw, action=action)

    # -- decisions ------------------------------------------------------------------------------

    def stale_weather(self, d: MarketDefinition, now: datetime) -> str | None:
        """Why the weather inputs of a market are too old to trade on (None: fresh enough)."""
        st = BY_SERIES.get(d.series_ticker)
        if st is None or d.close_time is None:
            return None
        f = self.forecasts.get(st.icao)
        if f is None or not self.freshness.fresh("forecast", f.ts_event, now):
            return "stale_forecast"
        day = climate_day(d.close_time - timedelta(minutes=1), st.tz)
        start, _ = climate_day_bounds(day, st.tz)
        if now >= start:
            # The day is under way: without a recent observation the running max (which can rule brackets
            # out) is unknown, and a model blind to it can be badly wrong late in the day.
            o = self.obs.get(st.icao)
            if o is None or o.climate_date != day or not self.freshness.fresh("obs", o.observed_at, now):
                return "stale_obs"
        return None

    async def evaluate(self, ticker: str) -> Signal | None:
        """Model vs book for one market; emits a signal when it matters."""
        st = self.view.get(ticker)
        if st is None or st.book is None:
            self.suppressed["no_market_or_book"] += 1
            return None
        d, top, update = st.defn, st.top(), st.book
        assert top is not None
        if d.status != "active":
            self.suppressed["market_not_active"] += 1
            return None
        now = self.clock()
        # Age from the book's own timestamp: a book replayed from JetStream arrives now but may be old.
        if not self.view.book_fresh(st, now):
            self.suppressed["stale_book"] += 1
            return None
        family = family_of(d.series_ticker)
        stale = self.stale_weather(d, now) if family == "weather" else None
        if stale is not None:
            self.suppressed[stale] += 1
            return None
        mp = self.weather_p.get(ticker) if family == "weather" else self._btc_p(d) if family == "btc" \
            else self._llm_p(ticker, now) if family == "llm" else None
        if mp is None:
            # A BTC market with a close time has no probability only when no venue price is fresh.
            self.suppressed["stale_spot" if family == "btc" and d.close_time is not None else "no_model"] += 1
            return None
        if mp.confidence < self.risk.confidence_floor:
            self.suppressed["low_confidence"] += 1
            return None
        e = edges(mp.p, top, st.grid, fee_type=st.fee_type, fee_multiplier=st.fee_multiplier)
        decision = best_action(e, min_edge=round(self.risk.min_edge * ONE_DOLLAR),
                               taker_min_edge=round(self.risk.taker_min_edge * ONE_DOLLAR))
        fair_only = decision.action == "none"
        if fair_only and d.series_ticker.upper() not in self.fair_value_series:
            self.suppressed[decision.reason or "no_edge"] += 1
            self.last.pop(ticker, None)
            return None
        if not fair_only and mp.action is not None and mp.action != decision.action:
            # The model made its own call (the llm Trader) and the edge points elsewhere, or it said hold.
            self.suppressed["llm_hold" if mp.action == "hold" else "llm_disagrees"] += 1
            return None
        now_m = time.monotonic()
        prev = self.last.get(ticker)
        if prev is not None:
            if now_m - prev.at < (self.fair_cooldown_s if fair_only and prev.action == "none" else self.cooldown_s):
                self.suppressed["cooldown"] += 1
                return None
            # A fair value is published again before it expires even when unchanged (the maker would pull).
            if (abs(prev.p_model - mp.p) < self.min_dp and prev.action == decision.action
                    and abs(prev.edge - (decision.edge or 0)) < self.min_dedge
                    and not (fair_only and now_m - prev.at > VALIDITY.total_seconds() / 2)):
                self.suppressed["unchanged"] += 1
                return None
        leg = e.yes if decision.action == "buy_yes" else e.no
        mid = None
        if top.best_yes_bid is not None and top.best_no_bid is not None:
            mid = (top.best_yes_bid + ONE_DOLLAR - top.best_no_bid) / 2 / ONE_DOLLAR
        # The id is the signal's identity: the same book update, the same inputs and the same action give the
        # same id on every replica, so JetStream dedupes them and the executor acts once. The probability is
        # not part of it: replicas compute it a moment apart (BTC from spot ticks each saw, weather from the
        # hours left), and a difference in its 4th decimal made two ids for one opportunity — traded twice by
        # two executors. The inputs that are the same everywhere are: the forecast run and the observed max
        # (weather), the analysis (llm). The book's timestamp is in it because `seq` starts again when feeds
        # reconnects: seq alone would reuse ids of old signals.
        book_us = int(update.ts_event.timestamp() * 1_000_000)
        basis = ":".join(str(mp.inputs[k]) for k in ("run_id", "observed_max_f", "analysis_id") if k in mp.inputs)
        sig = Signal(
            id=f"sig:{ticker}:{update.seq}:{book_us}:{decision.action}" + (f":{basis}" if basis else ""),
            ts_event=max(update.ts_event, mp.ts),
            mode=self.mode, family=family or "", series_ticker=d.series_ticker, event_ticker=d.event_ticker,
            ticker=ticker, model=mp.model, model_version=MODEL_VERSION, p_model=min(max(mp.p, 0.0), 1.0),
            p_market=min(max(mid if mid is not None else mp.p, 0.0), 1.0), action=decision.action,  # type: ignore[arg-type]
            limit_price=decision.limit_price, edge_maker=None if fair_only else leg.maker_edge,
            edge_taker=None if fair_only else leg.taker_edge,
            confidence=min(max(mp.confidence, 0.0), 1.0), valid_until=now + VALIDITY,
            inputs_ref=str(mp.inputs.get("run_id") or mp.inputs.get("analysis_id") or f"spot:{mp.inputs.get('spot')}"),
            p_raw=None if mp.p_raw is None else min(max(mp.p_raw, 0.0), 1.0))
        self.last[ticker] = Emitted(mp.p, decision.action, decision.edge or 0, now_m)
        self.emitted += 1
        await self.emit(sig)
        return sig

    def signal_subject(self, s: Signal) -> str:
        """Where a signal is published."""
        return subjects.sig(s.family, s.series_ticker, s.ticker)


class EdgeDecayMonitor:
    """Alerts when the model turns against a position the desk holds (deduplicated until it recovers).

    Holding YES is worth p per contract; selling it now is worth the YES bid. The edge has turned when the
    bid exceeds p by `margin` (for NO: when the NO bid, $1 − YES ask, exceeds 1 − p). Positions hedged by an
    opposite position elsewhere in the same event are skipped (the ladder is the exposure, not the leg), and
    so are markets whose book is stale.
    """

    def __init__(self, pipeline: SignalPipeline, *, margin: float = 0.05) -> None:
        self.pipeline = pipeline
        self.margin = margin
        self.active: set[str] = set()
        self.skipped: Counter[str] = Counter()

    def check(self, positions: dict[str, int]) -> list[dict[str, Any]]:
        """Positions (ticker → signed count, + = YES) in; new alerts (plain data) out."""
        p = self.pipeline
        out = []
        by_event: dict[str, list[int]] = {}
        for t, n in positions.items():
            if n and t in p.markets:
                by_event.setdefault(p.markets[t].defn.event_ticker, []).append(n)
        for ticker, n in positions.items():
            st = p.markets.get(ticker)
            if not n or st is None:
                continue
            d = st.defn
            signs = {x > 0 for x in by_event.get(d.event_ticker, [])}
            if len(signs) > 1:
                self.skipped["hedged"] += 1
                continue
            top = st.top()
            if top is None or not p.view.book_fresh(st):
                self.skipped["stale_book"] += 1
                continue
            mp = p.model_p(ticker)
            if mp is None:
                self.skipped["no_model"] += 1
                continue
            if n > 0:
                exit_value = (top.best_yes_bid or 0) / ONE_DOLLAR
                against = exit_value - mp.p > self.margin
                hold = mp.p
            else:
                exit_value = (top.best_no_bid or 0) / ONE_DOLLAR
                against = exit_value - (1 - mp.p) > self.margin
                hold = 1 - mp.p
            key = f"{ticker}:{'yes' if n > 0 else 'no'}"
            if against and key not in self.active:
                self.active.add(key)
                out.append({"ticker": ticker, "event_ticker": d.event_ticker, "side": "yes" if n > 0 else "no",
                            "position": n, "model_value": round(hold, 4), "exit_value": round(exit_value, 4),
                            "dedupe_key": f"edge_decay:{key}"})
            elif not against:
                self.active.discard(key)
        return out
