"""Feeds throughput on one process: Kalshi WS delta frames in → `md.book` events out on a real nats-server.

- `feeds_deltas_per_s`: with coalescing (the production setting, 5 ms): deltas processed per second
  until the last book state is published.
- `feeds_deltas_per_s_uncoalesced`: the same flow publishing one md.book event per delta.
Frames go through the real client path (JSON, seq check, parsing, local book) and the real fan-out and
bus publish; only the socket read is skipped.
"""

from __future__ import annotations

import asyncio
import json
import time

from benchmarks.harness import private_nats
from libs.common.bus import Bus
from libs.common.config import Mode
from libs.common.kalshi.rest import sim_environment
from libs.common.kalshi.ws import KalshiWS
from libs.common.money import format_count, format_dollars
from services.feeds.books import BookFanout
from services.feeds.service import make_emit

N = 50_000
TICKERS = [f"KXHIGHNY-26NOV23-B{50 + 2 * i}.5" for i in range(6)]


def _frames() -> list[str]:
    import random

    rng = random.Random(7)
    sizes: dict[tuple[str, str, int], int] = {}
    out = []
    for i in range(N):
        t = rng.choice(TICKERS)
        side = rng.choice(["yes", "no"])
        price = rng.randrange(1, 100) * 100
        cur = sizes.get((t, side, price), 0)
        delta = rng.randint(-cur, 1_000) if cur else rng.randint(1, 1_000)
        sizes[(t, side, price)] = cur + delta
        out.append(json.dumps({"type": "orderbook_delta", "sid": 1, "seq": i + 1 + len(TICKERS),
                               "msg": {"market_ticker": t, "price_dollars": format_dollars(price),
                                       "delta_fp": format_count(delta), "side": side, "ts_ms": 0}}))
    return out


async def _run(url: str, coalesce: bool) -> tuple[float, int]:
    bus = await Bus.connect(url, service="bench-feeds")
    received = 0

    async def count(_: object) -> None:
        nonlocal received
        received += 1

    sink = await Bus.connect(url, service="bench-sink")
    sub = await sink.nc.subscribe(sink.wire("md.book.>"), cb=count)
    await sink.nc.flush()
    fanout = BookFanout(make_emit(bus), mode=Mode.SIM, coalesce_s=0.005 if coalesce else 0.0)
    ws = KalshiWS(sim_environment("http://127.0.0.1:1/trade-api/v2", "ws://127.0.0.1:1"), None,
                  on_book=fanout.on_book)
    await ws.subscribe_books(TICKERS)
    ws._on_subscribed({"id": 1, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}})
    for i, t in enumerate(TICKERS):
        await ws._dispatch(json.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": i + 1,
                                       "msg": {"market_ticker": t}}))
    await fanout.flush()
    frames = _frames()
    stop = asyncio.Event()
    flusher = asyncio.create_task(fanout.run(stop)) if coalesce else None
    start = time.perf_counter()
    for i, f in enumerate(frames):
        await ws._dispatch(f)
        if not coalesce:
            await fanout.flush()
        elif i % 64 == 0:
            await asyncio.sleep(0)  # a socket read would yield here too
    await asyncio.sleep(fanout.coalesce_s * 2)
    await fanout.flush()
    await bus.nc.flush()
    elapsed = time.perf_counter() - start
    stop.set()
    if flusher:
        await flusher
    await sink.nc.flush()
    await sub.unsubscribe()
    await bus.close()
    await sink.close()
    return N / elapsed, fanout.published


async def run() -> dict[str, float | int]:
    """Both modes against a private nats-server."""
    async with private_nats() as url:
        coalesced, published = await _run(url, True)
        uncoalesced, _ = await _run(url, False)
    return {"feeds_deltas_per_s": round(coalesced), "feeds_deltas_per_s_uncoalesced": round(uncoalesced),
            "feeds_book_events_per_delta_coalesced": round(published / N, 4)}
