"""Signals: model time and md.book → sig latency.

- `weather_model_ms`: one event ladder (6 brackets) from 150 members (3 models × 50), median of 200 runs.
- `btc_ladder_ms`: P(YES) for a 200-strike ladder, median of 500 runs.
- `signal_latency_p50_ms` / `_p99_ms`: a book update published on core NATS until the signal it causes is
  received from JetStream by a subscriber, through the real service wiring, over 600 updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from benchmarks.harness import private_nats
from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode, load_settings
from libs.common.events import BookUpdate, MarketDefinition, PriceRange, Signal, WxForecast, WxMember
from services.signals.btc_model import market_probabilities
from services.signals.pipeline import SignalPipeline
from services.signals.service import attach
from services.signals.weather_model import Bracket, bracket_probabilities

LADDER = [("T50", "less", None, 50.0), ("B50.5", "between", 50.0, 51.0), ("B52.5", "between", 52.0, 53.0),
          ("B54.5", "between", 54.0, 55.0), ("B56.5", "between", 56.0, 57.0), ("T57", "greater", 57.0, None)]


def _median_ms(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 4)


def _models() -> dict[str, float]:
    rng = np.random.default_rng(1)
    members = {m: rng.normal(54, 2.5, 50) for m in ("gefs", "ifs", "gem")}
    brackets = [Bracket(t, k, f, c) for t, k, f, c in LADDER]
    strikes = np.arange(60_000, 160_000, 500, dtype=float)[:200] - 0.01
    types = ["greater"] * len(strikes)
    return {
        "weather_model_ms": _median_ms(lambda: bracket_probabilities(members, brackets, lead_hours=30.0), 200),
        "btc_ladder_ms": _median_ms(lambda: market_probabilities(100_000.0, types, strikes, np.full(200, np.nan),
                                                                 seconds_to_close=1800, vol=0.5), 500),
    }


async def _latency(url: str, n: int = 600) -> tuple[float, float]:
    now = datetime.now(UTC)
    bus = await Bus.connect(url, service="bench-signals")
    sink = await Bus.connect(url, service="bench-sink")
    sent: dict[int, float] = {}
    lat: list[float] = []
    done = asyncio.Event()

    async def on_sig(msg: Any) -> None:
        seq = int(Signal.model_validate_json(msg.data).id.split(":")[2])
        lat.append(time.perf_counter() - sent[seq])
        if len(lat) >= n:
            done.set()

    await sink.nc.subscribe(sink.wire("sig.>"), cb=on_sig)
    risk = load_settings(min_edge=0.02, taker_min_edge=0.04, confidence_floor=0.1).risk

    async def emit(sig: Signal) -> None:
        await bus.publish_js(subjects.sig(sig.family, sig.series_ticker, sig.ticker), sig)

    pipeline = SignalPipeline(emit, mode=Mode.SIM, risk=risk, cooldown_s=0.0)
    await attach(bus, pipeline, None)
    day = date.today() + timedelta(days=1)
    close = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=5)
    ticker = "KXHIGHNY-BENCH-B54.5"
    for suffix, kind, floor, cap in LADDER:
        await bus.publish_js(subjects.md_market("KXHIGHNY", f"KXHIGHNY-BENCH-{suffix}"), MarketDefinition(
            ts_event=now, mode=Mode.SIM, ticker=f"KXHIGHNY-BENCH-{suffix}", event_ticker="KXHIGHNY-BENCH",
            series_ticker="KXHIGHNY", status="active", strike_type=kind,
            floor_strike=None if floor is None else Decimal(str(floor)),
            cap_strike=None if cap is None else Decimal(str(cap)), close_time=close,
            price_ranges=(PriceRange(start=0, end=10_000, step=100),), fee_type="quadratic", fee_multiplier=1))
    rng = random.Random(2)
    members = tuple(WxMember(model=m, member=k, target_date=day, tmax_f=rng.gauss(54.5, 1.5))
                    for m in ("gefs", "ifs", "gem") for k in range(50))
    await bus.publish_js(subjects.md_wx_forecast("nyc"), WxForecast(
        id="wx:bench", ts_event=now, mode=Mode.SIM, city="nyc", station="KNYC", run_time=now, members=members))
    for _ in range(1000):  # the forecast travels the bus before the ladder exists
        if ticker in pipeline.weather_p:
            break
        await asyncio.sleep(0.01)
    subject = subjects.md_book("KXHIGHNY", ticker)
    for seq in range(1, n + 1):
        ask = 1_500 if seq % 2 else 2_000  # alternate, so every update changes the edge materially
        sent[seq] = time.perf_counter()
        await bus.publish(subject, BookUpdate(ts_event=now, mode=Mode.SIM, ticker=ticker, series_ticker="KXHIGHNY",
                                              seq=seq, yes_bids=((1_000, 500),), no_bids=((10_000 - ask, 500),)))
        await asyncio.sleep(0.002)
    # Books are last-value data: an ordered consumer that resyncs may skip to the newest book, so a few
    # updates can legitimately produce no signal. Wait until the stream is quiet.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 5)
    if len(lat) < 0.95 * n:
        raise RuntimeError(f"only {len(lat)} of {n} signals; suppressed {dict(pipeline.suppressed)}")
    await bus.close()
    await sink.close()
    q = statistics.quantiles([x * 1000 for x in lat], n=100)
    return round(q[49], 3), round(q[98], 3)


async def run() -> dict[str, float | int]:
    """Model timings and end-to-end latency on a private nats-server."""
    out: dict[str, float | int] = dict(_models())
    async with private_nats() as url:
        p50, p99 = await _latency(url)
    out.update({"signal_latency_p50_ms": p50, "signal_latency_p99_ms": p99})
    return out
