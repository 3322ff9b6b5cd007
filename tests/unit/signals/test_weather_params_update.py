"""Refitted weather parameters from the resolver (`res.param.weather.weather_params.all`): applied to the next
ladder of every station, refused whole when a field is unknown or a value unusable."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from benchmarks.prediction import RISK, WeatherDays, _definition
from libs.common.config import Mode
from libs.common.events import ModelParamUpdate
from services.signals.pipeline import SignalPipeline
from services.signals.weather_model import WeatherParams


def update(params: dict[str, object]) -> ModelParamUpdate:
    return ModelParamUpdate(ts_event=datetime(2026, 11, 22, tzinfo=UTC), mode=Mode.SIM, family="weather",
                            name="weather_params", scope="all", value=0.0, n_samples=40, params=params)


@pytest.fixture(scope="module")
def day() -> WeatherDays:
    return WeatherDays(1)


async def priced(day: WeatherDays) -> tuple[SignalPipeline, list[str]]:
    """A pipeline holding one sim event's ladder at its noon moment, with the default parameters."""
    world, event, _, moments = day.items[0]
    noon = next(m for m in moments if m.label.endswith("12:00"))
    pipe = SignalPipeline(lambda _: None, mode=Mode.SIM, risk=RISK, clock=lambda: noon.now)  # type: ignore[arg-type,return-value]
    tickers = [m.ticker for m in world.catalog.markets_of(event)]
    for t in tickers:
        await pipe.on_market(_definition(world, t, noon.now))
    for o in noon.obs:
        await pipe.on_obs(o)
    await pipe.on_forecast(noon.forecast)
    return pipe, tickers


async def test_a_refit_reprices_the_ladders_it_applies_to(day: WeatherDays) -> None:
    pipe, tickers = await priced(day)
    before = {t: pipe.weather_p[t].p for t in tickers}
    await pipe.on_param(update({"min_sd_f": 2.5, "nowcast_obs": 2}))
    assert pipe.weather_params == replace(WeatherParams(), min_sd_f=2.5, nowcast_obs=2)
    assert isinstance(pipe.weather_params.nowcast_obs, int)
    after = {t: pipe.weather_p[t].p for t in tickers}
    assert after != before  # a much wider kernel moves mass between brackets
    assert sum(after.values()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("params", [{"min_sd_f": 0.6, "no_such_field": 1.0}, {"min_sd_f": float("nan")},
                                    {"min_sd_f": -1.0}, {"min_sd_f": "wide"}, {"min_sd_f": True}, {}])
async def test_a_bad_refit_is_refused_whole_and_the_parameters_in_use_stay(day: WeatherDays,
                                                                         params: dict[str, object]) -> None:
    pipe, tickers = await priced(day)
    before = {t: pipe.weather_p[t].p for t in tickers}
    assert await pipe.on_param(update(params)) == []
    assert pipe.weather_params == WeatherParams()
    assert {t: pipe.weather_p[t].p for t in tickers} == before


async def test_ladders_priced_at_once_keep_the_newest_whichever_thread_ends_first(day: WeatherDays) -> None:
    """The model runs in worker threads: ladders of one event started together may end in any order, and the
    one started last (the newest inputs) is the one kept; the others are counted as superseded."""
    import asyncio

    pipe, tickers = await priced(day)
    fits = [{"min_sd_f": 2.5}, {"min_sd_f": 0.8}, {"min_sd_f": 1.6}]
    event = next(iter(pipe.events))
    defs = [pipe.markets[t].defn for t in tickers]
    want = {}
    for fit in fits:  # what each set of parameters prices alone
        pipe.weather_params = replace(WeatherParams(), **fit)
        await pipe._weather_ladder(event, defs)
        want[fit["min_sd_f"]] = {t: pipe.weather_p[t].p for t in tickers}
    assert len({tuple(v.values()) for v in want.values()}) == 3
    before = pipe.suppressed["ladder_superseded"]
    started = []
    for fit in fits:  # each ladder reads its parameters as it starts, then computes while the next starts
        pipe.weather_params = replace(WeatherParams(), **fit)
        started.append(asyncio.create_task(pipe._weather_ladder(event, defs)))
        await asyncio.sleep(0)
    await asyncio.gather(*started)
    assert {t: pipe.weather_p[t].p for t in tickers} == want[1.6]
    assert pipe.suppressed["ladder_superseded"] - before == 2 * len(defs)
