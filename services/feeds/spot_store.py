"""Persistence of spot bars in `crypto_spot_bars`, keyed by (venue, symbol, interval_s, ts)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from libs.common.db import CryptoSpotBar, upsert_many
from libs.common.db.upsert import Executor
from services.feeds.spot import SpotBar

BAR_KEY = ("venue", "symbol", "interval_s", "ts")


def bar_row(bar: SpotBar) -> dict[str, Any]:
    """The `crypto_spot_bars` row of one bar."""
    return {
        "venue": bar.venue, "symbol": bar.symbol, "interval_s": bar.interval_s, "ts": bar.ts,
        "open_price": bar.open, "high_price": bar.high, "low_price": bar.low, "close_price": bar.close,
        "vwap_price": bar.vwap, "volume_base": bar.volume, "trade_count": bar.trades,
    }


async def store_bars(session: Executor, bars: Iterable[SpotBar]) -> int:
    """Upsert bars (a re-stored bar overwrites itself, so redelivery changes nothing); the number newly inserted.

    The transaction is the caller's: commit after this returns.
    """
    rows = [bar_row(b) for b in bars]
    return await upsert_many(session, CryptoSpotBar, rows, key=BAR_KEY)
