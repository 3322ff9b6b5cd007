"""Signals refuse inputs older than their limits by the inputs' own timestamps, each with its reason."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import partial

from libs.common.config import Mode, load_settings
from libs.common.events import SpotTick, WxForecast, WxMember, WxObservation
from services.signals.pipeline import ModelP, SignalPipeline
from tests.kit.factories import book_update, market_definition

NOW = datetime(2026, 12, 2, 17, tzinfo=UTC)  # noon EST: the NYC climate day of Dec 2 is under way
WX, BTC = "KXHIGHNY-26DEC02-B50.5", "KXBTCD-26DEC0217-T90000"


async def pipeline() -> tuple[SignalPipeline, list[object]]:
    out: list[object] = []

    async def emit(s: object) -> None:
        out.append(s)

    p = SignalPipeline(emit, mode=Mode.SIM, risk=load_settings(min_edge=0.02).risk, clock=lambda: NOW,
                       cooldown_s=0)
    # WX is the 50-51 °F bracket of Dec 2, closing at the end of the NYC climate day.
    await p.on_market(market_definition(WX, ts_event=NOW, close_time=datetime(2026, 12, 3, 4, 59, tzinfo=UTC)))
    await p.on_market(market_definition(BTC, ts_event=NOW, strike_type="greater", floor_strike=90000,
                                        close_time=NOW + timedelta(minutes=30)))
    p.weather_p[WX] = ModelP(0.9, 0.9, "wx_ens", {"run_id": "r"}, NOW)  # far from the 30¢ market
    return p, out


book = partial(book_update, yes_bids=((2_900, 10_000),), no_bids=((6_900, 10_000),), ts_event=NOW, seq=1)


def forecast(ts: datetime) -> WxForecast:
    return WxForecast(ts_event=ts, mode=Mode.SIM, city="nyc", station="KNYC", run_time=ts,
                      members=(WxMember(model="gfs", member=0, target_date=date(2026, 12, 2), tmax_f=50.7),))


async def test_weather_needs_a_fresh_forecast_and_on_the_day_a_fresh_observation() -> None:
    p, out = await pipeline()
    p.forecasts["KNYC"] = forecast(NOW - timedelta(hours=5))  # older than the 3 h limit
    await p.on_book(book(WX))
    assert p.suppressed["stale_forecast"] == 1 and out == []
    p.forecasts["KNYC"] = forecast(NOW - timedelta(minutes=20))
    await p.on_book(book(WX))
    assert p.suppressed["stale_obs"] == 1 and out == []  # the day is under way and no observation is known
    p.obs["KNYC"] = WxObservation(ts_event=NOW - timedelta(hours=3), mode=Mode.SIM, station="KNYC",
                                  observed_at=NOW - timedelta(hours=3), climate_date=date(2026, 12, 2), temp_f=45,
                                  running_max_f=45)
    await p.on_book(book(WX))
    assert p.suppressed["stale_obs"] == 2 and out == []
    p.obs["KNYC"] = p.obs["KNYC"].model_copy(update={"observed_at": NOW - timedelta(minutes=30)})
    await p.on_book(book(WX))
    assert len(out) == 1  # every input fresh: it signals


async def test_a_replayed_book_is_stale_by_its_timestamp_and_btc_needs_fresh_spot() -> None:
    p, out = await pipeline()
    p.forecasts["KNYC"] = forecast(NOW)
    await p.on_book(book(WX, ts_event=NOW - timedelta(minutes=10)))
    assert p.suppressed["stale_book"] == 1 and out == []
    await p.on_spot(SpotTick(ts_event=NOW - timedelta(minutes=1), mode=Mode.SIM, venue="coinbase", symbol="BTC-USD",
                             kind="trade", price=95_000 * 10_000))
    await p.on_book(book(BTC))
    assert p.suppressed["stale_spot"] == 1 and out == []
    ages = p.input_ages()
    assert ages["md_spot"] == 60 and ages["md_book"] == 0 and ages["md_wx_obs"] is None
