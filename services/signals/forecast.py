"""`cmd.signals.forecast {city, date}`: what the weather model sees for one city and climate day.

The answer is the signals service's own state, as plain data: the newest ensemble run's members'
maxima by model, the bracket probabilities it computed next to each market's best YES bid and ask,
and the station's observed max so far. Temperatures are °F floats, prices integer $0.0001 ticks.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from libs.common.bus import Bus, CommandError
from libs.common.climate import climate_day
from libs.common.events import MarketDefinition
from libs.common.money import ONE_DOLLAR
from libs.common.stations import BY_ICAO, BY_SERIES, STATIONS, Station

if TYPE_CHECKING:
    from services.signals.pipeline import SignalPipeline


def station_of(city: str) -> Station:
    """A settlement station by city token (`nyc`), series (`KXHIGHNY`) or ICAO id (`KNYC`)."""
    key = city.strip()
    for st in STATIONS:
        if key.lower() == st.city:
            return st
    st = BY_SERIES.get(key.upper()) or BY_ICAO.get(key.upper())
    if st is None:
        raise CommandError("bad_request", f"no settlement station {city!r}; cities: "
                           + ", ".join(s.city for s in STATIONS))
    return st


def _day_of(d: MarketDefinition, st: Station) -> date | None:
    # The climate day a daily-high market settles on: the one its close (the day's end) falls in.
    return None if d.close_time is None else climate_day(d.close_time - timedelta(minutes=1), st.tz)


def _strike_key(d: MarketDefinition) -> tuple[float, float]:
    lo = float(d.floor_strike) if d.floor_strike is not None else -math.inf
    hi = float(d.cap_strike) if d.cap_strike is not None else math.inf
    return lo, hi


def _age(now: datetime, t: datetime | None) -> float | None:
    return None if t is None else round(max((now - t).total_seconds(), 0.0), 3)


def forecast_answer(p: SignalPipeline, st: Station, day: date | None, now: datetime) -> dict[str, Any]:
    """The forecast view of one station's climate day (`day` None: the first day with markets from today on)."""
    events: dict[date, list[str]] = {}
    for event, tickers in p.events.items():
        defs = [p.markets[t].defn for t in tickers if t in p.markets]
        if defs and defs[0].series_ticker == st.series and (d := _day_of(defs[0], st)) is not None:
            events.setdefault(d, []).append(event)
    f = p.forecasts.get(st.icao)
    member_days = {m.target_date for m in f.members} if f is not None else set()
    if not events and f is None:
        raise CommandError("no_data", f"signals has no forecast and no markets for {st.city} ({st.series}) yet: "
                           f"is {st.series} in KDESK_FEEDS_SERIES, and is feeds running?")
    today = climate_day(now, st.tz)
    if day is None:
        day = min((d for d in events if d >= today), default=today)

    by_model: dict[str, list[float]] = {}
    if f is not None:
        for m in f.members:
            if m.target_date == day:
                by_model.setdefault(m.model, []).append(m.tmax_f)
    models = [{"model": name, "members": len(xs), "min_f": min(xs), "mean_f": math.fsum(xs) / len(xs),
               "max_f": max(xs), "tmax_f": sorted(xs)} for name, xs in sorted(by_model.items())]

    obs = p.obs.get(st.icao)
    observed = None if obs is None else {
        "observed_at": obs.observed_at, "climate_date": obs.climate_date.isoformat(), "temp_f": obs.temp_f,
        "running_max_f": obs.running_max_f, "age_s": _age(now, obs.observed_at)}

    brackets: list[dict[str, Any]] = []
    blend: dict[str, Any] | None = None
    for event in sorted(events.get(day, [])):
        defs = sorted((p.markets[t].defn for t in p.events[event] if t in p.markets), key=_strike_key)
        for d in defs:
            ms = p.markets[d.ticker]
            top = ms.top()
            bid = top.best_yes_bid if top else None
            ask = top.yes_ask if top else None
            mp = p.weather_p.get(d.ticker)
            if mp is not None and mp.inputs.get("climate_date") != day.isoformat():
                mp = None
            if mp is not None and blend is None:
                blend = {k: mp.inputs.get(k) for k in ("run_id", "members", "mean_f", "sd_f", "bias_f",
                                                       "observed_max_f")} | {"computed_at": mp.ts,
                                                                             "confidence": mp.confidence}
            brackets.append({
                "ticker": d.ticker, "event_ticker": event, "status": d.status, "strike_type": d.strike_type,
                "floor_strike": d.floor_strike, "cap_strike": d.cap_strike,
                "model_prob": mp.p if mp is not None else None,
                "yes_bid_ticks": bid, "yes_ask_ticks": ask,
                "market_prob": (bid + ask) / 2 / ONE_DOLLAR if bid is not None and ask is not None else None,
                "book_age_s": p.view.book_age_s(ms, now)})
    probs = [b["model_prob"] for b in brackets if b["model_prob"] is not None]
    return {
        "city": st.city, "station": st.icao, "series_ticker": st.series, "tz": st.tz,
        "climate_date": day.isoformat(), "today": today.isoformat(),
        "dates": sorted(d.isoformat() for d in set(events) | member_days),
        "events": sorted(events.get(day, [])),
        "run": None if f is None else {"id": f.id, "run_time": f.run_time, "age_s": _age(now, f.run_time),
                                       "deterministic": f.deterministic},
        "members": sum(m["members"] for m in models), "models": models, "blend": blend,
        "observed": observed,
        "observed_max_f": obs.running_max_f if obs is not None and obs.climate_date == day else None,
        "brackets": brackets, "model_prob_sum": math.fsum(probs) if probs else None,
    }


async def serve_forecast(bus: Bus, pipeline: SignalPipeline) -> None:
    """Answer `cmd.signals.forecast {city, date?}` from this replica's pipeline (every replica follows every input)."""
    async def forecast(req: dict[str, Any]) -> dict[str, Any]:
        city = req.get("city")
        if not isinstance(city, str) or not city.strip():
            raise CommandError("bad_request", "city is required (e.g. nyc, KXHIGHNY or KNYC)")
        raw = req.get("date")
        try:
            day = date.fromisoformat(raw) if raw else None
        except (TypeError, ValueError):
            raise CommandError("bad_request", f"date must be YYYY-MM-DD, got {raw!r}") from None
        return forecast_answer(pipeline, station_of(city), day, pipeline.clock())

    await bus.serve("signals", "forecast", forecast)


__all__ = ["forecast_answer", "serve_forecast", "station_of"]
