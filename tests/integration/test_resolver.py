"""The resolver against the simulator over real NATS + PostgreSQL: outcomes, CLI reports, scores, reversals."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.db import ClimateReport, MarketResolution, PredictionAccuracy, create_engine, session_factory
from libs.common.db import signals as sig_tables
from libs.common.db.upsert import insert_if_new
from libs.common.events import Alert, MarketDefinition, Resolution
from libs.common.kalshi import KalshiRest
from services.resolver.service import Resolver
from services.resolver.store import ResolverStore, implied_result
from services.sim.wxfake import WeatherFake, WeatherTruth
from tests.integration.test_executor import eventually
from tests.kit.desk import desk_settings
from tests.kit.sim import BTC_TICKERS, EVENT, SERIES, TICKERS, sim_rig

DAY = date(2026, 11, 23)  # the hand world's weather event (KXHIGHNY-26NOV23)
TRUE_MAX = 52
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # the final CLI for the 23rd is out (issued ~06:30 UTC)
WRONG = TICKERS[0]  # settled against what the official report implies


@pytest.fixture
async def wx() -> AsyncIterator[WeatherFake]:
    server = await WeatherFake(WeatherTruth(7, {("KNYC", DAY): float(TRUE_MAX)}), clock=lambda: NOW).start()
    yield server
    await server.stop()


def p_of(ticker: str, k: int) -> float:
    return round(0.05 + 0.9 * ((hash((ticker, k)) % 1000) / 1000), 4)  # any spread of forecasts


async def add_signals(db_url: str, tickers: list[str], family: str, series: str, event: str,
                      inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Three signals per market as the signals service stores them (model p, book seen)."""
    engine = create_engine(db_url)
    made = {}
    async with session_factory(engine)() as s, s.begin():
        for t in tickers:
            for k in range(3):
                sid = f"sig:{t}:{k}"
                p = p_of(t, k)
                bid, ask = 3000 + 1000 * k, 3400 + 1000 * k
                await insert_if_new(s, sig_tables.Signal, {
                    "signal_id": sid, "mode": "sim", "family": family, "series_ticker": series,
                    "event_ticker": event, "ticker": t, "model": "test:1", "model_prob": p, "market_prob": 0.5,
                    "action": "buy_yes", "yes_bid_price": bid, "yes_ask_price": ask, "decision": "trade",
                    "inputs": inputs,
                    "ts_event": NOW - timedelta(days=1)}, key=["signal_id"])
                made[sid] = (t, p, (bid + ask) / 2 / 10_000)
    await engine.dispose()
    return made


async def test_markets_settle_once_each_scores_recompute_and_a_reversal_rescores_only_its_rows(
        nats_url: str, db_url: str, wx: WeatherFake) -> None:
    settings = desk_settings(feeds_series="KXHIGHNY,KXBTCD")
    async with sim_rig() as rig:
        eng, cat = rig.exchange.engine, rig.exchange.catalog
        results = {}
        for t in TICKERS:
            m = cat.markets[t]
            truth = implied_result(m.strike_type, m.floor_strike, m.cap_strike, Decimal(TRUE_MAX))
            results[t] = ("no" if truth == "yes" else "yes") if t == WRONG else truth
        for i, t in enumerate(BTC_TICKERS):
            results[t] = "yes" if i == 0 else "no"
        for t in BTC_TICKERS:  # what the simulator's world reports as the settlement index value
            cat.markets[t].expiration_value = "78612.34"
        for t, r in results.items():
            eng.set_status(t, "closed")
            eng.settle(t, r)
        made = await add_signals(db_url, TICKERS, "weather", SERIES, EVENT)
        made |= await add_signals(db_url, BTC_TICKERS, "btc", "KXBTCD", BTC_TICKERS[0].rsplit("-", 1)[0],
                                  {"spot": 786_000_000, "vol": 0.5})  # our composite: $78,600.00

        bus = await Bus.connect(nats_url, service="resolver", mode=Mode.SIM)
        await bus.provision()
        res_sub = await bus.js.subscribe(bus.wire("res.market.>"), ordered_consumer=True)
        alert_sub = await bus.js.subscribe(bus.wire("ops.alert.resolution"), ordered_consumer=True)
        for t in TICKERS:  # weather by lifecycle events (as feeds publishes them); BTC only by the sweep
            await bus.publish_js(subjects.md_market(SERIES, t), MarketDefinition(
                id=f"mkt:{t}:determined", ts_event=NOW, mode=Mode.SIM, ticker=t, event_ticker=EVENT,
                series_ticker=SERIES, status="determined", result=results[t]))
        engine = create_engine(db_url)
        store = ResolverStore(session_factory(engine), "sim", clock=lambda: NOW)
        rest = KalshiRest(rig.env)
        nws = httpx.AsyncClient(base_url=wx.url, headers={"User-Agent": "kdesk-test"})
        resolver = Resolver(settings, bus, store, rest, nws, score_every_s=0.2, fetch_every_s=0.1)
        try:
            await resolver.start()

            async def all_scored() -> bool:
                st = await bus.request("resolver", "status")
                return st["counts"].get("scored", 0) >= len(made)

            await eventually(all_scored, timeout=20, what="every signal scored")
            async with session_factory(engine)() as s:
                resolutions = (await s.scalars(select(MarketResolution))).all()
                scores = {a.prediction_id: a for a in (await s.scalars(select(PredictionAccuracy))).all()}
                reports = (await s.scalars(select(ClimateReport))).all()
            assert sorted(r.ticker for r in resolutions) == sorted(results)
            assert {r.ticker: r.result for r in resolutions} == results
            assert all(r.revision == 0 and r.settlement_value_price in (0, 10_000) for r in resolutions)
            final = [r for r in reports if r.climate_date == DAY]
            assert final and final[0].kind == "final" and final[0].max_temp_f == TRUE_MAX
            weather = {r.ticker: r for r in resolutions if r.series_ticker == SERIES}
            btc = [r for r in resolutions if r.series_ticker == "KXBTCD"]
            assert all(r.basis == Decimal("12.34") and r.model_underlying == Decimal("78600") for r in btc), btc
            assert all(r.report_max_f == TRUE_MAX for r in weather.values())
            alert = Alert.model_validate_json((await alert_sub.next_msg(timeout=5)).data)
            assert alert.data["ticker"] == WRONG and alert.data["report_max_f"] == TRUE_MAX

            # The accuracy answer, recomputed from what went in (not from the rows it wrote).
            acc = await bus.request("resolver", "accuracy", {"days": 30})
            for family, tickers in (("weather", TICKERS), ("btc", BTC_TICKERS)):
                mine = [(p, mkt, 1 if results[t] == "yes" else 0) for sid, (t, p, mkt) in made.items()
                        if t in tickers]
                got = acc["families"][family]
                brier = sum((p - o) ** 2 for p, _, o in mine) / len(mine)
                brier_mkt = sum((m - o) ** 2 for _, m, o in mine) / len(mine)
                ll = sum(-math.log(min(max(p, 1e-4), 1 - 1e-4) if o else 1 - min(max(p, 1e-4), 1 - 1e-4))
                         for p, _, o in mine) / len(mine)
                assert got["n"] == len(mine) == 3 * len(tickers)
                assert abs(got["brier"] - brier) < 1e-9 and abs(got["brier_market"] - brier_mkt) < 1e-9
                assert abs(got["brier_skill"] - (1 - brier / brier_mkt)) < 1e-9
                assert abs(got["log_loss"] - ll) < 1e-9
                for b in got["bins"]:
                    inside = [(p, o) for p, _, o in mine if b["lo"] <= p < b["hi"]]
                    assert b["count"] == len(inside)
                    if inside:
                        assert abs(b["observed"] - sum(o for _, o in inside) / len(inside)) < 1e-9
            cal = await bus.request("resolver", "calibration", {"days": 30, "family": "btc", "bins": 5})
            assert len(cal["bins"]) == 5 and sum(b["count"] for b in cal["bins"]) == 3 * len(BTC_TICKERS)

            first = [Resolution.model_validate_json((await res_sub.next_msg(timeout=2)).data) for _ in results]
            assert sorted(r.ticker for r in first) == sorted(results) and len({r.id for r in first}) == len(results)

            # A backfill of the window finds nothing new; a redelivered settlement and a sweep change nothing.
            bf = await bus.request("resolver", "backfill", {"days": 30})
            assert (bf["resolutions_new_or_changed"], bf["scored"]) == (0, 0)
            await bus.publish_js(subjects.md_market(SERIES, TICKERS[1]), MarketDefinition(
                id=f"mkt:{TICKERS[1]}:again", ts_event=NOW, mode=Mode.SIM, ticker=TICKERS[1], event_ticker=EVENT,
                series_ticker=SERIES, status="finalized", result=results[TICKERS[1]]))
            await resolver.sweep()
            await eventually(lambda: _nothing_pending(bus), what="redelivery handled")
            with pytest.raises(TimeoutError):
                await res_sub.next_msg(timeout=0.5)

            # A reversal: the exchange corrects one result; exactly that market's scores change.
            flipped = TICKERS[3]
            market = await rest.market(flipped)
            corrected = market.model_copy(update={"result": "no" if results[flipped] == "yes" else "yes",
                                                  "settlement_value": 10_000 - (market.settlement_value or 0)})
            await resolver.resolve(corrected, "kalshi-rest")
            changed = Resolution.model_validate_json((await res_sub.next_msg(timeout=2)).data)
            assert changed.ticker == flipped and changed.id.endswith(":1")
            await resolver.score()
            async with session_factory(engine)() as s:
                after = {a.prediction_id: a for a in (await s.scalars(select(PredictionAccuracy))).all()}
                [row] = (await s.scalars(select(MarketResolution).where(MarketResolution.ticker == flipped))).all()
            assert row.revision == 1 and len(after) == len(scores)
            moved = {sid for sid in after if (after[sid].outcome, after[sid].revision) !=
                     (scores[sid].outcome, scores[sid].revision)}
            assert moved == {sid for sid, (t, _, _) in made.items() if t == flipped}
            assert all(after[sid].revision == 1 and after[sid].outcome == 1 - scores[sid].outcome for sid in moved)
        finally:
            await resolver.stop()
            await rest.aclose()
            await nws.aclose()
            await engine.dispose()
            await bus.close()


async def _nothing_pending(bus: Bus) -> bool:
    st = await bus.request("resolver", "status")
    return st["pending"] == 0 and st["unpublished"] == 0


async def test_a_market_the_account_was_paid_on_is_resolved_even_outside_the_swept_series(
        nats_url: str, db_url: str) -> None:
    from libs.common.matching.types import OrderRequest
    from tests.integration.test_executor import mm_quotes

    held = BTC_TICKERS[1]
    async with sim_rig() as rig:
        mm_quotes(rig, held, 4000, 4200)
        desk = rig.client("desk")
        rig.exchange.engine.place("desk", OrderRequest(held, "bid", 4200, 500, "immediate_or_cancel", "taker_at_cross"))
        rig.exchange.engine.set_status(held, "closed")
        rig.exchange.engine.settle(held, "yes")
        bus = await Bus.connect(nats_url, service="resolver", mode=Mode.SIM)
        await bus.provision()
        engine = create_engine(db_url)
        store = ResolverStore(session_factory(engine), "sim")
        rest = KalshiRest(rig.env)
        # Only weather is swept and no lifecycle event names the BTC market: the settlement does.
        resolver = Resolver(desk_settings(feeds_series="KXHIGHNY"), bus, store, rest, None, account=desk,
                            fetch_every_s=0.1)
        try:
            await resolver.start()
            await eventually(lambda: store.resolved({held}), what="resolved from the settlement")
            assert await resolver.from_settlements() == 0  # known now: nothing more to read
            async with session_factory(engine)() as s:
                [row] = (await s.scalars(select(MarketResolution).where(MarketResolution.ticker == held))).all()
            assert (row.result, row.settlement_value_price, row.series_ticker) == ("yes", 10_000, "KXBTCD")
        finally:
            await resolver.stop()
            await rest.aclose()
            await engine.dispose()
            await bus.close()
