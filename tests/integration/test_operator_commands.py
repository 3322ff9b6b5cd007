"""The answers behind `kdesk forecast`, `kdesk ws-status` and `kdesk mode`, over a real NATS server:
`cmd.signals.forecast` from the signals pipeline's state, `cmd.feeds.ws_status` from live venue connections
(the simulator's fake venues over real sockets), the control-KV helpers the bot and the CLI share, and
`kdesk strategies` against a stand-in for the executor's `cmd.executor.strategies`."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from libs.common import control
from libs.common.bus import Bus, CommandError
from libs.common.climate import climate_day_bounds
from libs.common.config import Mode, load_settings
from libs.common.events import Event, Signal, WxForecast, WxMember, WxObservation
from libs.common.subjects import ControlKey
from services.ctl import cli
from services.feeds.connections import serve_ws_status
from services.feeds.spot import VenueFeed, coinbase, kraken
from services.signals.forecast import serve_forecast
from services.signals.pipeline import SignalPipeline
from services.sim.venues import FakeVenues
from tests.integration.test_kalshi_client import until
from tests.kit.factories import book_update, market_definition
from tests.unit.ctl.test_render_strategies import ANSWER as STRATEGIES

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 10:00 EST: the NYC climate day of Nov 23 is under way
DAY = date(2026, 11, 23)
EVENT = "KXHIGHNY-26NOV23"
# Kalshi's ladder: below 49, 49-50, 51-52, above 52 (whole °F, `between` inclusive).
LADDER = (("T49", "less", None, 49), ("B49.5", "between", 49, 50), ("B51.5", "between", 51, 52),
          ("T52", "greater", 52, None))
MEMBERS = {"ecmwf_ifs025_ensemble": [48.2, 50.1, 50.9, 51.4, 53.0], "ncep_gefs025": [49.0, 49.6, 52.2]}


async def _desk_state() -> tuple[SignalPipeline, dict[str, tuple[int, int]]]:
    """A pipeline that has seen what feeds publishes: the ladder's definitions, a run, an observation, books."""
    async def emit(_: Signal) -> None:
        return None

    p = SignalPipeline(emit, mode=Mode.SIM, risk=load_settings().risk, clock=lambda: NOW)
    _, close = climate_day_bounds(DAY, "America/New_York")
    for suffix, kind, floor, cap in LADDER:
        await p.on_market(market_definition(f"{EVENT}-{suffix}", ts_event=NOW, strike_type=kind, close_time=close,
                                            floor_strike=None if floor is None else Decimal(floor),
                                            cap_strike=None if cap is None else Decimal(cap)))
    await p.on_obs(WxObservation(ts_event=NOW, mode=Mode.SIM, station="KNYC", observed_at=NOW - timedelta(minutes=9),
                                 climate_date=DAY, temp_f=47.5, running_max_f=48.0))
    members = tuple(WxMember(model=m, member=i, target_date=DAY, tmax_f=x)
                    for m, xs in MEMBERS.items() for i, x in enumerate(xs))
    members += (WxMember(model="ncep_gefs025", member=0, target_date=DAY + timedelta(days=1), tmax_f=60.0),)
    await p.on_forecast(WxForecast(id="wx:test:KNYC:7", ts_event=NOW - timedelta(minutes=20), mode=Mode.SIM,
                                   city="nyc", station="KNYC", run_time=NOW - timedelta(minutes=20), members=members))
    tops: dict[str, tuple[int, int]] = {}
    for i, (suffix, *_) in enumerate(LADDER):
        ticker = f"{EVENT}-{suffix}"
        bid, no_bid = 1_000 + 500 * i, 8_000 - 700 * i
        await p.on_book(book_update(ticker, ((bid - 100, 500), (bid, 1_000)), ((no_bid, 700),), ts_event=NOW))
        tops[ticker] = (bid, 10_000 - no_bid)
    return p, tops


async def test_forecast_answers_members_by_model_brackets_beside_the_market_and_the_observed_max(
        nats_url: str) -> None:
    pipeline, tops = await _desk_state()
    assert len(pipeline.weather_p) == len(LADDER), pipeline.suppressed
    bus = await Bus.connect(nats_url, service="signals", mode=Mode.SIM)
    ctl = await Bus.connect(nats_url, service="ctl", mode=Mode.SIM)
    try:
        await serve_forecast(bus, pipeline)
        await bus.nc.flush()  # the subscription is at the server before the other connection asks
        data = await ctl.request("signals", "forecast", {"city": "nyc"})
        assert (data["station"], data["series_ticker"], data["climate_date"]) == ("KNYC", "KXHIGHNY", "2026-11-23")
        assert data["events"] == [EVENT] and data["dates"] == ["2026-11-23", "2026-11-24"]
        assert data["run"]["id"] == "wx:test:KNYC:7" and data["run"]["age_s"] == 1200.0
        assert data["members"] == 8
        assert [(m["model"], m["members"], m["min_f"], m["max_f"], m["tmax_f"]) for m in data["models"]] == \
            [(m, len(xs), min(xs), max(xs), sorted(xs)) for m, xs in sorted(MEMBERS.items())]
        assert data["models"][0]["mean_f"] == pytest.approx(sum(MEMBERS["ecmwf_ifs025_ensemble"]) / 5)
        assert data["observed_max_f"] == 48.0 and data["observed"]["temp_f"] == 47.5
        assert data["observed"]["age_s"] == 540.0
        # Every market of the event, in strike order, beside its book; the model's values are the pipeline's own.
        got = data["brackets"]
        assert [b["ticker"] for b in got] == [f"{EVENT}-{s}" for s, *_ in LADDER]
        for b in got:
            assert b["model_prob"] == pipeline.weather_p[b["ticker"]].p
            assert (b["yes_bid_ticks"], b["yes_ask_ticks"]) == tops[b["ticker"]]
            assert b["market_prob"] == sum(tops[b["ticker"]]) / 2 / 10_000 and b["book_age_s"] == 0.0
        assert data["model_prob_sum"] == pytest.approx(1.0)
        assert data["blend"]["run_id"] == "wx:test:KNYC:7" and data["blend"]["observed_max_f"] == 48.0
        assert (got[1]["floor_strike"], got[1]["cap_strike"]) == ("49", "50")  # Decimals stay exact strings

        # The same station by series or ICAO id; another day holds its own members and no markets.
        assert (await ctl.request("signals", "forecast", {"city": "KXHIGHNY"}))["brackets"] == got
        other = await ctl.request("signals", "forecast", {"city": "knyc", "date": "2026-11-24"})
        assert other["brackets"] == [] and other["members"] == 1 and other["observed_max_f"] is None
        with pytest.raises(CommandError, match="no settlement station 'gotham'"):
            await ctl.request("signals", "forecast", {"city": "gotham"})
        with pytest.raises(CommandError, match="KXHIGHMIA in KDESK_FEEDS_SERIES"):
            await ctl.request("signals", "forecast", {"city": "mia"})
        with pytest.raises(CommandError, match="YYYY-MM-DD"):
            await ctl.request("signals", "forecast", {"city": "nyc", "date": "23/11/2026"})
    finally:
        await ctl.close()
        await bus.close()


async def test_ws_status_answers_each_venue_state_last_message_and_reconnects(nats_url: str) -> None:
    stop = asyncio.Event()

    async def emit(_: str, __: Event) -> None:
        return None

    async with FakeVenues(lambda _: 95_000.0, venues=("coinbase", "kraken"), interval_s=0.02,
                          heartbeat_interval_s=0.1, seed=7) as fakes:
        feeds = [VenueFeed(replace(v, stale_after_s=1.0), emit, mode=Mode.SIM, backoff_base_s=0.05, backoff_cap_s=0.2,
                           rng=random.Random(1))
                 for v in (coinbase(fakes.ws_url("coinbase")), kraken(fakes.ws_url("kraken")))]
        bus = await Bus.connect(nats_url, service="feeds", mode=Mode.SIM)
        ctl = await Bus.connect(nats_url, service="ctl", mode=Mode.SIM)
        tasks = [asyncio.create_task(f.run(stop)) for f in feeds]
        try:
            await serve_ws_status(bus, feeds, instance="feeds-1")
            await bus.nc.flush()
            await until(lambda: all(f.ticks > 3 for f in feeds), what="ticks from both venues")
            data = await ctl.request("feeds", "ws_status")
            assert data["instance"] == "feeds-1"
            conns = {c["name"]: c for c in data["connections"]}
            assert set(conns) == {"coinbase", "kraken"}
            for name, c in conns.items():
                assert (c["state"], c["kind"], c["reconnects"], c["url"]) == ("connected", "spot", 0,
                                                                              fakes.ws_url(name))
                assert c["messages"] > 3 and 0 <= c["last_message_age_s"] < 1.0
            assert fakes["kraken"].cut() == 1
            await until(lambda: feeds[1].connects == 2 and feeds[1].connected.is_set(), what="kraken reconnect")
            again = {c["name"]: c for c in (await ctl.request("feeds", "ws_status"))["connections"]}
            assert again["kraken"]["reconnects"] == 1 and again["coinbase"]["reconnects"] == 0
            assert again["kraken"]["messages"] >= conns["kraken"]["messages"]
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ctl.close()
            await bus.close()


async def test_the_shared_control_helpers_set_arm_and_disarm_the_mode(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, service="ctl", mode=Mode.SIM)
    try:
        await bus.provision()
        kv = await bus.control()
        assert await control.read_mode(kv) == control.ModeSwitch(None, None)
        until_ = await control.arm_live(kv, now=NOW, hours=8)
        sw = await control.read_mode(kv)
        assert sw == control.ModeSwitch("live", NOW + timedelta(hours=8)) and until_ == sw.live_armed_until
        assert sw.live_armed(NOW) and not sw.live_armed(NOW + timedelta(hours=9))
        assert sw.as_dict(NOW) == {"control_mode": "live", "live_armed_until": "2026-11-23T23:00:00+00:00",
                                   "live_armed": True}
        await control.set_mode(kv, "sim")
        assert await control.read_mode(kv) == control.ModeSwitch("sim", None)  # any other mode disarms
        with pytest.raises(ValueError, match="arm live with arm_live"):
            await control.set_mode(kv, "live")
        await kv.put(ControlKey.LIVE_ARMED_UNTIL, b"tomorrow-ish")  # unreadable: not armed, as the executor reads it
        assert (await control.read_mode(kv)).live_armed_until is None
        await control.set_family(kv, "btc", False)
        assert (await kv.get(ControlKey.family_enabled("btc"))).value == b"false"
    finally:
        await bus.close()


def _run_cli(argv: list[str]) -> int:
    # The command itself, not `cli.main`: main reconfigures process-wide logging onto this test's stderr.
    args = cli.build_parser().parse_args(argv)
    return int(args.func(args))


async def test_kdesk_strategies_renders_the_executors_answer_and_says_when_it_cannot(
        nats_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KDESK_NATS_URL", nats_url)
    monkeypatch.setenv("KDESK_MODE", "paper")
    capsys.readouterr()
    assert await asyncio.to_thread(_run_cli, ["strategies"]) == 1  # no executor yet
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("kdesk strategies: unavailable: no executor instance is running in "
                                               "paper mode"), err
    executor = await Bus.connect(nats_url, service="executor", mode=Mode.PAPER)
    asked: list[dict[str, object]] = []

    async def answer(req: dict[str, object]) -> dict[str, object]:
        asked.append(req)
        return STRATEGIES

    try:
        await executor.serve("executor", "strategies", answer)
        await executor.nc.flush()
        assert await asyncio.to_thread(_run_cli, ["strategies", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == STRATEGIES and asked == [{}]
        assert await asyncio.to_thread(_run_cli, ["strategies"]) == 0
        out = capsys.readouterr().out
        assert "mode PAPER" in out and "$1,234.56" in out and "71.5%" in out and "maker: leading" in out
    finally:
        await executor.close()
    monkeypatch.setenv("KDESK_NATS_URL", "nats://127.0.0.1:1")
    assert await asyncio.to_thread(_run_cli, ["strategies"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("kdesk strategies: cannot reach NATS"), err
