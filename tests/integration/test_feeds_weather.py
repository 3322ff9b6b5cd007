"""Weather feeds against the fake Open-Meteo/NWS over real sockets, with PostgreSQL and a real bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from libs.common.climate import climate_day_bounds
from libs.common.config import Mode
from libs.common.db import create_engine, session_factory
from libs.common.db import feeds as tables
from libs.common.events import Event, WxForecast
from libs.common.health import Freshness
from libs.common.stations import BY_ICAO
from services.feeds.wx import EnsemblePoller, ObservationPoller, WeatherDataError
from services.sim.wxfake import MODELS, WeatherFake, WeatherTruth

NYC = BY_ICAO["KNYC"]
NOW = datetime(2026, 11, 22, 20, 30, tzinfo=UTC)  # 15:30 EST


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []

    async def __call__(self, subject: str, event: Event) -> None:
        self.events.append((subject, event))


@pytest.fixture
async def fake() -> AsyncIterator[WeatherFake]:
    truth = WeatherTruth(4, {("KNYC", date(2026, 11, 22)): 58.0, ("KNYC", date(2026, 11, 23)): 49.0})
    server = await WeatherFake(truth, clock=lambda: NOW).start()
    yield server
    await server.stop()


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Any]:
    engine = create_engine(db_url)
    yield session_factory(engine)
    await engine.dispose()


def expected_member_max(truth: WeatherTruth, model: str, member: int, day: date) -> float:
    """The fake's own hourly values of the newest run (°F, 0.1 rounding) over the LST window, maximised."""
    start, _ = climate_day_bounds(day, NYC.tz)
    weather = truth.station("KNYC")
    hours = np.arange(24) + int(start.timestamp()) // 3600
    return max(round(v, 1) for v in weather.members_f(weather.latest_run(NOW), model, hours)[member].tolist())


async def test_ensemble_members_climate_day_maxima_published_and_stored(fake: WeatherFake, sessions: Any) -> None:
    sink, fresh = Sink(), Freshness()
    async with httpx.AsyncClient(timeout=10) as client:
        poller = EnsemblePoller(NYC, sink, mode=Mode.SIM, client=client, ensemble_url=fake.url, forecast_url=fake.url,
                                sessions=sessions, freshness=fresh, clock=lambda: NOW, provider="sim")
        ev = await poller.poll_once()
        assert ev.city == "nyc" and ev.station == "KNYC"
        assert {m.model for m in ev.members} == set(MODELS)
        assert {m.target_date for m in ev.members} == {date(2026, 11, 22), date(2026, 11, 23)}
        for m in ev.members[:: 17]:
            want = expected_member_max(fake.truth, m.model, m.member, m.target_date)
            assert m.tmax_f == pytest.approx(want, abs=0.01)
        today = [m.tmax_f for m in ev.members if m.target_date == date(2026, 11, 22)]
        # Members spread around the day's forecast: near the pinned max, never exactly on it.
        assert abs(float(np.mean(today)) - 58.0) < 6 and float(np.std(today)) > 0.5
        assert "2026-11-22" in ev.deterministic
        assert [s for s, _ in sink.events] == ["md.wx.forecast.nyc"]
        assert not fresh.snapshot()["ensemble_nyc"].stale

        await poller.poll_once()  # same run id (same minute): stored once
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(tables.WeatherForecastRun)) == 1
        n = await s.scalar(select(func.count()).select_from(tables.WeatherEnsembleMember))
        assert n == 2 * sum(k for k, _, _ in MODELS.values())


async def test_errors_are_retried_and_malformed_skipped(fake: WeatherFake) -> None:
    sink = Sink()
    async with httpx.AsyncClient(timeout=10) as client:
        poller = EnsemblePoller(NYC, sink, mode=Mode.SIM, client=client, ensemble_url=fake.url, forecast_url=fake.url,
                                clock=lambda: NOW, interval_s=0.05)
        fake.fail_next(1, 500)
        with pytest.raises(httpx.HTTPStatusError):
            await poller.poll_once()
        fake.garbage_next(1)
        with pytest.raises(WeatherDataError):
            await poller.poll_once()
        assert poller.malformed == 1
        assert isinstance(await poller.poll_once(), WxForecast)  # and then it works again
        # The run loop turns those failures into backoff, not a crash.
        import asyncio

        fake.fail_next(2, 429)
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        for _ in range(200):
            if poller.failures == 0 and len(sink.events) >= 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
        assert len(sink.events) >= 2


async def test_observations_running_max_resets_at_the_lst_boundary(fake: WeatherFake, sessions: Any) -> None:
    sink = Sink()
    clock = [NOW]
    fake.clock = lambda: clock[0]
    async with httpx.AsyncClient(timeout=10) as client:
        poller = ObservationPoller(NYC, sink, mode=Mode.SIM, client=client, nws_url=fake.url,
                                   user_agent="kdesk-test (ops@example.invalid)", sessions=sessions,
                                   clock=lambda: clock[0])
        first = await poller.poll_once()
        assert first and all(o.climate_date == date(2026, 11, 22) for o in first)
        maxima = [o.running_max_f for o in first]
        assert maxima == sorted(maxima)  # monotone within the day
        assert max(o.temp_f for o in first) == maxima[-1]
        assert await poller.poll_once() == []  # nothing new, nothing re-published
        clock[0] = datetime(2026, 11, 23, 6, 10, tzinfo=UTC)  # 01:10 EST: a new climate day
        nxt = await poller.poll_once()
        assert [o.climate_date for o in nxt] == [date(2026, 11, 23)]
        assert nxt[0].running_max_f == nxt[0].temp_f  # reset
    async with sessions() as s:
        n = await s.scalar(select(func.count()).select_from(tables.WeatherObservation))
        assert n == len(first) + len(nxt)

    async with httpx.AsyncClient(timeout=10) as bare:  # no User-Agent: the real API (and the fake) refuse
        bare.headers.pop("User-Agent", None)
        resp = await bare.get(f"{fake.url}/stations/KNYC/observations", headers={"User-Agent": ""})
        assert resp.status_code == 403


async def test_fake_cli_reports_state_the_true_max(fake: WeatherFake) -> None:
    import re

    async with httpx.AsyncClient(timeout=10, headers={"User-Agent": "kdesk-test"}) as client:
        listing = (await client.get(f"{fake.url}/products/types/CLI/locations/NYC")).json()
        newest = listing["@graph"][0]
        assert newest["productCode"] == "CLI" and newest["id"] == "CLINYC-20261121"
        text = (await client.get(f"{fake.url}/products/{newest['id']}")).json()["productText"]
        assert "CLIMATE SUMMARY FOR NOVEMBER 21 2026" in text
        block = text.split("TEMPERATURE (F)", 1)[1]
        observed = int(re.search(r"MAXIMUM\s+(-?\d+)", block).group(1))  # type: ignore[union-attr]
        assert observed == round(fake.truth.day_max("KNYC", date(2026, 11, 21)))
        latest = (await client.get(f"{fake.url}/products/types/CLI/locations/NYC/latest")).json()
        assert latest["id"] == newest["id"]


async def test_evening_poll_still_covers_todays_climate_day() -> None:
    """Between 00Z and local standard midnight the climate day began yesterday (UTC): the request
    must reach back (`past_days`), or every member of today would lack hours and come out empty."""
    evening = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 21:00 EST on the 22nd
    truth = WeatherTruth(4, {("KNYC", date(2026, 11, 22)): 58.0, ("KNYC", date(2026, 11, 23)): 49.0})
    server = await WeatherFake(truth, clock=lambda: evening).start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            poller = EnsemblePoller(NYC, Sink(), mode=Mode.SIM, client=client, ensemble_url=server.url,
                                    forecast_url=server.url, clock=lambda: evening, provider="sim")
            ev = await poller.poll_once()
            again = await poller.poll_once()
    finally:
        await server.stop()
    today = [m for m in ev.members if m.target_date == date(2026, 11, 22)]
    assert len(today) == sum(k for k, _, _ in MODELS.values())
    assert again.id == ev.id  # same content, same run id
