"""Executor: wire-to-wire latency, measured by the simulator.

`wire_to_wire_p50_ms` / `_p99_ms`: from the simulated exchange changing a book so that an edge
appears (a market maker pulls its bid) to the same exchange receiving the desk's order, over 500+
samples, at a pace inside Kalshi's basic-tier write budget. The path is the real one: the sim's
WebSocket → the feeds' book fan-out → md.book on core NATS → the signals pipeline → sig.* on
JetStream → the executor's durable consumer → risk reservation in PostgreSQL → a signed V2 create
over HTTP. Both timestamps are taken inside the sim process.

`w2w_stage_<stage>_p50_ms` / `_p99_ms`: the same samples split where the time goes. Everything runs in
this one process, so every stamp is `time.perf_counter()` on one clock: the book change (here), `md.book`
published (this bench's emit for the fan-out, after `Bus.publish` returns), the signal handed to
JetStream (this bench's emit for the pipeline, before the PubAck wait), the executor's desk receiving it
and its reservation committed (`Desk.reserve_times`), the create leaving and its answer arriving
(`OrderLifecycle.create_times`; the pending mark sits between reserved and sent), and the simulator
resting the order (the wire-to-wire end). Each stage is the time from the previous stamp; `exchange` is
create sent → the simulator has the order (a part of `answered`, not added to the chain).
`w2w_creates_signed_ahead`: creates whose headers were signed before the order existed (signing.py; the
RSA signature is ~0.8 ms of the `exchange` stage otherwise).

`reserve_ms_at_10_open` / `reserve_ms_at_1000_open`: p50 of one reservation (RiskGate.reserve, as the
executor holds it) with 10 and with 1,000 open orders in the mode (one mode each: `sim` and `paper`),
spread over events of ten brackets with strikes; each timed reservation is on a bracket event of its own
and is closed again (untimed), so the count stays put; the two take turns, so the machine's noise falls on
both alike. A figure of how the cost grows with the book of the desk, not a timed assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from benchmarks.harness import private_nats, private_postgres
from libs.common import subjects
from libs.common.bus import Bus
from libs.common.climate import climate_day
from libs.common.config import Mode, load_settings
from libs.common.db import Order, create_engine, session_factory
from libs.common.events import MarketDefinition, PriceRange, Signal, WxForecast, WxMember
from libs.common.kalshi import KalshiWS
from libs.common.matching.types import OrderRequest, OrderUpdate
from libs.common.stations import BY_SERIES
from services.executor.broker import KalshiUpdates
from services.executor.exposure import Strike
from services.executor.ledger import Ledger
from services.executor.risk import Intent, RiskGate
from services.executor.service import Executor
from services.feeds.books import BookFanout
from services.signals.pipeline import SignalPipeline
from services.signals.service import attach
from tests.kit.sim import EVENT, SERIES, TICKERS, sim_rig

NOW = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)  # the hand world's event (Nov 23) is tomorrow
TICKER = TICKERS[3]  # B54.5


STAGES = ("book", "signal", "received", "reserved", "sent", "answered")


def _pct(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles([x * 1000 for x in xs], n=100)
    return round(q[49], 3), round(q[98], 3)


async def _latency(nats_url: str, db_url: str, n: int = 520) -> tuple[float, float, int, dict[str, float | int]]:
    async with sim_rig() as rig:
        eng = rig.exchange.engine
        rig.client("desk")
        rig.client("mm")
        bus = await Bus.connect(nats_url, service="bench-desk", mode=Mode.SIM)
        for m in rig.exchange.catalog.markets_of(EVENT):
            await bus.publish_js(subjects.md_market(SERIES, m.ticker), MarketDefinition(
                ts_event=NOW, mode=Mode.SIM, ticker=m.ticker, event_ticker=EVENT, series_ticker=SERIES,
                status="active", strike_type=m.strike_type, floor_strike=m.floor_strike, cap_strike=m.cap_strike,
                close_time=m.close_time, price_ranges=(PriceRange(start=0, end=10_000, step=100),),
                fee_type="quadratic", fee_multiplier=1))
        settings = load_settings(mode=Mode.SIM, min_edge=0.03, taker_min_edge=0.9, confidence_floor=0.05,
                                 max_open_orders=5, reprice_after_s=3600, instance="bench")

        sig_at: dict[str, float] = {}  # signal id -> handed to JetStream
        book_at: list[float] = []  # md.book of TICKER published

        async def emit_sig(sig: Signal) -> None:
            sig_at[sig.id] = time.perf_counter()
            await bus.publish_js(subjects.sig(sig.family, sig.series_ticker, sig.ticker), sig)

        pipeline = SignalPipeline(emit_sig, mode=Mode.SIM, risk=settings.risk, clock=lambda: NOW, cooldown_s=0.0)
        await attach(bus, pipeline, None)
        rng = random.Random(4)
        close = rig.exchange.catalog.markets[TICKER].close_time
        day = climate_day(close - timedelta(minutes=1), BY_SERIES[SERIES].tz)
        members = tuple(WxMember(model=m, member=k, target_date=day, tmax_f=rng.gauss(54.5, 1.2))
                        for m in ("gefs", "ifs", "gem") for k in range(50))
        for attempt in range(50):  # until the definitions have reached the pipeline and the ladder exists
            await bus.publish_js(subjects.md_wx_forecast("nyc"), WxForecast(
                id=f"wx:bench-desk:{attempt}", ts_event=NOW, mode=Mode.SIM, city="nyc", station="KNYC",
                run_time=NOW, members=members))
            await asyncio.sleep(0.2)
            if TICKER in pipeline.weather_p:
                break
        p = pipeline.weather_p[TICKER].p
        fair_bid = int(p * 100) * 100  # a YES bid at the model's value: no maker edge
        fair_ask = fair_bid + 300
        # Under the fair bid, the book falls back to $0.01: a maker edge of p - $0.02 (a day ahead the model
        # spreads the centre bracket wide, p ~0.08), well over the 0.03 minimum.
        if p - 0.02 < settings.risk.min_edge + 0.02:
            raise RuntimeError(f"the bench's bracket has p={p:.3f}: too little edge under it for a sample")
        eng.place("mm", OrderRequest(TICKER, "ask", fair_ask, 100_000, "good_till_canceled", "taker_at_cross"))
        eng.place("mm", OrderRequest(TICKER, "bid", 100, 100_000, "good_till_canceled", "taker_at_cross"))

        async def emit_book(subject: str, ev: Any) -> None:
            await bus.publish(subject, ev)
            if ev.ticker == TICKER:
                book_at.append(time.perf_counter())

        fan = BookFanout(emit_book, mode=Mode.SIM, coalesce_s=0.0, clock=lambda: NOW)
        stop = asyncio.Event()
        feed_ws = KalshiWS(rig.env, rig.signer("mm"), on_book=fan.on_book)
        tasks = [asyncio.create_task(feed_ws.run(stop)), asyncio.create_task(fan.run(stop))]
        await feed_ws.subscribe_books([TICKER])

        changed_at: list[float] = [0.0]
        arrived: list[float] = []
        samples: list[tuple[float, float, str | None]] = []  # (changed, exchange has it, client_order_id)
        got = asyncio.Event()

        def on_engine(ev: Any) -> None:
            if isinstance(ev, OrderUpdate) and ev.order.user_id == "desk" and ev.order.fill_count == 0 \
                    and ev.order.status == "resting" and ev.order.initial_count == ev.order.remaining_count:
                if not got.is_set():
                    t = time.perf_counter()
                    arrived.append(t - changed_at[0])
                    samples.append((changed_at[0], t, ev.order.client_order_id))
                    got.set()

        eng.listen(on_engine)
        engine = create_engine(db_url)
        ex = Executor(settings, bus, session_factory(engine), rig.client("desk"),
                      updates=KalshiUpdates(KalshiWS(rig.env, rig.signer("desk"))), clock=lambda: NOW,
                      loop_interval_s=3600)
        await ex.start()
        try:
            def fair() -> str:
                return eng.place("mm", OrderRequest(TICKER, "bid", fair_bid, 1_000, "good_till_canceled",
                                                    "taker_at_cross")).order.order_id

            top = fair()
            await asyncio.sleep(0.05)  # the fair book reaches everyone: no edge, no order
            for _ in range(n):
                got.clear()
                changed_at[0] = time.perf_counter()
                eng.cancel("mm", top)  # the bid falls back to $0.01: a maker edge appears
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(got.wait(), 2.0)
                top = fair()  # the edge is gone again
                # Let signals already in flight for the edge arrive (the working order declines them), then
                # take the desk's order away and wait until its ledger knows, so every sample starts clean.
                await asyncio.sleep(0.05)
                for oid in eng.resting_ids("desk"):
                    eng.cancel("desk", oid)
                for _ in range(400):
                    if not await ex.ledger.open_orders() and not eng.resting_ids("desk"):
                        break
                    await asyncio.sleep(0.005)
                # Stay inside the basic tier's write budget (10 creates/s): above it the client's own rate
                # limiter paces the orders, and this would measure the pacing instead of the path.
                await asyncio.sleep(0.05)
            stages = _stages(samples, book_at, sig_at, ex)
            signer = getattr(ex.broker, "signer", None)
            stages["w2w_creates_signed_ahead"] = getattr(signer, "signed_ahead_used", 0)
        finally:
            stop.set()
            await ex.stop()
            for t in tasks:
                t.cancel()
            await bus.close()
            await engine.dispose()
    if len(arrived) < 500:
        raise RuntimeError(f"only {len(arrived)} of {n} book changes reached the exchange as orders")
    p50, p99 = _pct(arrived)
    return p50, p99, len(arrived), stages


def _stages(samples: list[tuple[float, float, str | None]], book_at: list[float], sig_at: dict[str, float],
            ex: Executor) -> dict[str, float | int]:
    """Each sample's stamps, matched by client_order_id (desk, create) and signal id; stage = time since the
    previous stamp. A sample missing any stamp is left out (`w2w_stage_samples` says how many remain)."""
    assert ex.desk is not None
    reserved = {coid: (sid, recv, res) for sid, coid, recv, res in ex.desk.reserve_times}
    created = {coid: (sent, ans) for coid, sent, ans in ex.orders.create_times}
    per: dict[str, list[float]] = {s: [] for s in (*STAGES, "exchange")}
    books = sorted(book_at)
    for changed, at_exchange, coid in samples:
        if coid not in reserved or coid not in created:
            continue
        sid, recv, res = reserved[coid]
        sig = sig_at.get(sid or "")
        book = next((b for b in books if b >= changed), None)
        if sig is None or book is None or not book <= sig <= recv:
            continue
        sent, ans = created[coid]
        chain = (changed, book, sig, recv, res, sent, ans)
        for name, a, b in zip(STAGES, chain[:-1], chain[1:], strict=True):
            per[name].append(b - a)
        per["exchange"].append(at_exchange - sent)
    out: dict[str, float | int] = {"w2w_stage_samples": len(per["book"])}
    if len(per["book"]) < 2:
        return out
    for name, xs in per.items():
        out[f"w2w_stage_{name}_p50_ms"], out[f"w2w_stage_{name}_p99_ms"] = _pct(xs)
    return out


BRACKETS = 10  # markets per benchmark event


def _bracket(event: str, k: int) -> tuple[str, Strike]:
    lo = Decimal(40 + 2 * k)
    return f"{event}-B{lo + Decimal('0.5')}", Strike("between", lo, lo + 1)


async def _seed(sessions: Any, mode: str, strikes: dict[str, Strike | None], count: int) -> None:
    """`count` open orders in `mode` (resting YES bids, ten brackets per event), written in one statement."""
    rows = []
    for i in range(count):
        event = f"KXBENCH-{mode}-E{i // BRACKETS}"
        ticker, strikes[ticker] = _bracket(event, i % BRACKETS)
        rows.append({"mode": mode, "client_order_id": f"kd-seed-{i}", "order_id": f"ex-seed-{mode}-{i}",
                     "leg": "yes", "family": "weather", "series_ticker": "KXBENCH", "event_ticker": event,
                     "ticker": ticker, "book_side": "bid", "outcome_side": "yes", "yes_price": 1_000,
                     "initial_count": 100, "remaining_count": 100, "time_in_force": "good_till_canceled",
                     "status": "resting"})
    async with sessions() as s, s.begin():
        await s.execute(Order.__table__.insert(), rows)


async def _reserve_cost(url: str, sizes: dict[int, str] | None = None, n: int = 300) -> dict[str, float]:
    """p50 ms of one reservation at each number of open orders, each in a mode of its own (the gate as the
    executor holds it). The sizes take turns, so the machine's noise falls on all of them alike."""
    sizes = sizes or {10: "sim", 1_000: "paper"}
    engine = create_engine(url)
    sessions = session_factory(engine)
    limits = load_settings(mode=Mode.SIM, max_order_usd="1000", max_market_usd="10000", max_event_usd="10000",
                           max_family_usd="1000000", max_portfolio_usd="1000000", max_open_orders=100_000).risk
    # `dedicated` and `sync_strikes` exist since the one-statement reservation; this also times the gate before.
    kw = {"dedicated": True} if "dedicated" in inspect.signature(RiskGate).parameters else {}
    runs = []
    try:
        for size, mode in sizes.items():
            strikes: dict[str, Strike | None] = {}
            await _seed(sessions, mode, strikes, size)
            hot = [_bracket(f"KXBENCH-{mode}-HOT", k) for k in range(BRACKETS)]
            strikes.update(hot)
            gate = RiskGate(sessions, mode, limits, strikes, **kw)
            if hasattr(gate, "sync_strikes"):
                await gate.sync_strikes()
            runs.append((size, mode, gate, Ledger(sessions, mode), [t for t, _ in hot], []))
        async with engine.connect() as c:  # statistics as autovacuum would have them, without it running now
            await (await c.execution_options(isolation_level="AUTOCOMMIT")).exec_driver_sql("VACUUM ANALYZE")
        for i in range(n + 20):  # the first 20 warm the connections and the plans
            for size, mode, gate, ledger, hot_tickers, times in runs[:: 1 if i % 2 else -1]:
                intent = Intent(client_order_id=f"kd-bench-{i}", signal_id=None, leg="yes", family="weather",
                                series_ticker="KXBENCH", event_ticker=f"KXBENCH-{mode}-HOT",
                                ticker=hot_tickers[i % BRACKETS], book_side="bid", yes_price=3_000, count=500,
                                post_only=True)
                t0 = time.perf_counter()
                verdict = await gate.reserve(intent, now=datetime.now(UTC))
                if i >= 20:
                    times.append(time.perf_counter() - t0)
                if not verdict.ok:
                    raise RuntimeError(f"benchmark reservation declined at {size} open: {verdict}")
                await ledger.finish(intent.client_order_id, "canceled", "bench")  # the open count stays put
        return {f"reserve_ms_at_{size}_open": round(statistics.median(times) * 1000, 3)
                for size, *_, times in runs}
    finally:
        for _, _, gate, *_ in runs:
            if hasattr(gate, "aclose"):
                await gate.aclose()
        await engine.dispose()


async def run() -> dict[str, float | int]:
    """Wire-to-wire latency on a private nats-server and an embedded PostgreSQL; reservation cost by book size."""
    with private_postgres() as url:
        async with private_nats() as nats_url:
            p50, p99, samples, stages = await _latency(nats_url, url)
    with private_postgres() as url:
        reserve = await _reserve_cost(url)
    return {"wire_to_wire_p50_ms": p50, "wire_to_wire_p99_ms": p99, "wire_to_wire_samples": samples, **stages,
            **reserve}
