"""Local order book speed.

- `book_deltas_per_s`: `LocalBook.apply_delta` on a 99-level-per-side book with random signed
  deltas, reading the best bid after every update (what a quoting loop does).
- `book_ws_deltas_per_s`: the whole client path for one WS frame: JSON decode, seq check, dollar
  and count parsing, apply, best-bid read (no network).
"""

from __future__ import annotations

import asyncio
import json
import random
import time

from libs.common.kalshi.book import LocalBook
from libs.common.kalshi.rest import sim_environment
from libs.common.kalshi.ws import KalshiWS
from libs.common.money import format_count, format_dollars

N = 300_000
WS_N = 100_000


def _deltas(n: int, seed: int) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    sizes: dict[tuple[str, int], int] = {}
    out = []
    for _ in range(n):
        side = "yes" if rng.random() < 0.5 else "no"
        price = rng.randrange(1, 100) * 100
        cur = sizes.get((side, price), 0)
        delta = rng.randint(-cur, 1_000) if cur else rng.randint(1, 1_000)
        sizes[(side, price)] = cur + delta
        out.append((side, price, delta))
    return out


def _apply_rate() -> float:
    deltas = _deltas(N, 1)
    book = LocalBook("B")
    book.load_snapshot([], [])
    start = time.perf_counter()
    for side, price, delta in deltas:
        book.apply_delta(side, price, delta)  # type: ignore[arg-type]
        _ = book.best_yes_bid
    return N / (time.perf_counter() - start)


async def _ws_rate() -> float:
    ticker = "KXHIGHNY-26NOV23-B63.5"
    frames = [json.dumps({"type": "orderbook_delta", "sid": 1, "seq": i + 2,
                          "msg": {"market_ticker": ticker, "price_dollars": format_dollars(p),
                                  "delta_fp": format_count(d), "side": s, "ts_ms": 0}})
              for i, (s, p, d) in enumerate(_deltas(WS_N, 2))]
    seen = 0

    def on_book(book: LocalBook) -> None:
        nonlocal seen
        seen += 1
        _ = book.best_yes_bid

    ws = KalshiWS(sim_environment("http://127.0.0.1:1/trade-api/v2", "ws://127.0.0.1:1"), None, on_book=on_book)
    await ws.subscribe_books([ticker])
    ws._on_subscribed({"id": 1, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}})
    await ws._dispatch(json.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": 1,
                                   "msg": {"market_ticker": ticker}}))
    start = time.perf_counter()
    for f in frames:
        await ws._dispatch(f)
    elapsed = time.perf_counter() - start
    if seen != WS_N + 1 or ws.gaps:
        raise RuntimeError(f"benchmark book path lost updates: {seen} seen, {ws.gaps} gaps")
    return WS_N / elapsed


async def run() -> dict[str, float | int]:
    """Measure both rates."""
    return {"book_deltas_per_s": round(_apply_rate()), "book_ws_deltas_per_s": round(await _ws_rate())}


if __name__ == "__main__":
    print(asyncio.run(run()))
