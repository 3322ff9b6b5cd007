"""A local Kalshi order book built from a snapshot and signed deltas.

Kalshi books hold bids only: YES bids at YES prices and NO bids at NO prices (best YES ask =
$1 − best NO bid). Sizes live in dicts; each side also keeps a sorted list of occupied prices, so
the best level is its last element — kept up to date on every delta (bisect on a list of at most a
few hundred levels), never found by scanning the grid.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from libs.common.money import ONE_DOLLAR

Side = Literal["yes", "no"]
Level = tuple[int, int]


class BookInconsistent(Exception):
    """A delta would take a level below zero: the local book no longer matches the exchange."""


class _Ladder:
    __slots__ = ("prices", "sizes")

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.prices: list[int] = []

    def load(self, levels: Iterable[Level]) -> None:
        self.sizes = {}
        for price, count in levels:
            if count > 0:
                self.sizes[price] = self.sizes.get(price, 0) + count
        self.prices = sorted(self.sizes)

    def apply(self, price: int, delta: int) -> int:
        old = self.sizes.get(price, 0)
        new = old + delta
        if new < 0:
            raise BookInconsistent(f"level {price} would go to {new}")
        if new == 0:
            if old:
                del self.sizes[price]
                del self.prices[bisect_left(self.prices, price)]
        else:
            if not old:
                insort(self.prices, price)
            self.sizes[price] = new
        return new

    def best(self) -> Level | None:
        if not self.prices:
            return None
        p = self.prices[-1]
        return p, self.sizes[p]

    def levels(self, depth: int | None = None) -> list[Level]:
        prices = self.prices if depth is None else self.prices[-depth:]
        return [(p, self.sizes[p]) for p in prices]


class LocalBook:
    """One market's book; `seq` is the last applied sequence number of its subscription."""

    __slots__ = ("_no", "_yes", "seq", "ticker", "ts_exchange", "valid")

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        self._yes = _Ladder()
        self._no = _Ladder()
        self.seq: int | None = None
        self.valid = False  # False until a snapshot arrives, again after a detected gap or a lost connection
        self.ts_exchange: datetime | None = None  # exchange time of the last delta, or when the snapshot came

    def load_snapshot(self, yes: Iterable[Level], no: Iterable[Level], seq: int | None = None,
                      ts: datetime | None = None) -> None:
        """Replace the book with a snapshot (taken at `ts`)."""
        self._yes.load(yes)
        self._no.load(no)
        self.seq = seq
        self.valid = True
        self.ts_exchange = ts

    def apply_delta(self, side: Side, price: int, delta: int, seq: int | None = None,
                    ts: datetime | None = None) -> int:
        """Apply a signed size change at one level (made at exchange time `ts`); returns the new size there."""
        new = (self._yes if side == "yes" else self._no).apply(price, delta)
        if seq is not None:
            self.seq = seq
        if ts is not None:
            self.ts_exchange = ts
        return new

    def invalidate(self) -> None:
        """Mark the book untrustworthy until the next snapshot."""
        self.valid = False

    @property
    def best_yes_bid(self) -> Level | None:
        """Best YES bid (price, size)."""
        return self._yes.best()

    @property
    def best_no_bid(self) -> Level | None:
        """Best NO bid (price at NO prices, size)."""
        return self._no.best()

    @property
    def best_yes_ask(self) -> Level | None:
        """Best YES ask = $1 − best NO bid, with that bid's size."""
        b = self._no.best()
        return None if b is None else (ONE_DOLLAR - b[0], b[1])

    def yes_levels(self, depth: int | None = None) -> list[Level]:
        """YES bids ascending (best last), optionally only the best `depth`."""
        return self._yes.levels(depth)

    def no_levels(self, depth: int | None = None) -> list[Level]:
        """NO bids ascending (best last), at NO prices."""
        return self._no.levels(depth)

    def crossed(self) -> bool:
        """True when best YES bid + best NO bid >= $1 (never true on a correct book)."""
        y, n = self._yes.best(), self._no.best()
        return y is not None and n is not None and y[0] + n[0] >= ONE_DOLLAR
