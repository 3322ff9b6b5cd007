"""A price-level book of resting entries with FIFO queues (price-time priority), reusable by any venue model.

One `LevelBook` holds one side: levels keyed by price, each a FIFO deque of entries with remaining
counts. The best price is the last element of a sorted price list, updated on insert/remove, so it is
never found by scanning the grid. The paper broker reuses this to model the queue ahead of our orders.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(eq=False)
class Entry:
    """A resting quantity at a price; `ref` is whatever the owner needs (an order)."""

    ref: object
    price: int
    remaining: int


class LevelBook:
    """One side of a book: price levels, best (highest) price first when iterating."""

    __slots__ = ("_levels", "_prices", "_sizes")

    def __init__(self) -> None:
        self._levels: dict[int, deque[Entry]] = {}
        self._sizes: dict[int, int] = {}
        self._prices: list[int] = []

    def add(self, entry: Entry) -> None:
        """Append at the back of its price level."""
        q = self._levels.get(entry.price)
        if q is None:
            q = self._levels[entry.price] = deque()
            self._sizes[entry.price] = 0
            insort(self._prices, entry.price)
        q.append(entry)
        self._sizes[entry.price] += entry.remaining

    def remove(self, entry: Entry) -> None:
        """Take an entry out of the book entirely."""
        q = self._levels[entry.price]
        q.remove(entry)
        self._sizes[entry.price] -= entry.remaining
        if not q:
            self._drop(entry.price)

    def reduce(self, entry: Entry, by: int) -> None:
        """Reduce an entry in place (keeps its queue position); removes it at zero."""
        entry.remaining -= by
        self._sizes[entry.price] -= by
        if entry.remaining <= 0:
            q = self._levels[entry.price]
            q.remove(entry)
            if not q:
                self._drop(entry.price)

    def _drop(self, price: int) -> None:
        del self._levels[price]
        del self._sizes[price]
        del self._prices[bisect_left(self._prices, price)]

    def best(self) -> int | None:
        """Highest price with resting size."""
        return self._prices[-1] if self._prices else None

    def size_at(self, price: int) -> int:
        """Total resting at a price."""
        return self._sizes.get(price, 0)

    def entries_from_best(self, min_price: int) -> Iterator[Entry]:
        """Entries in priority order (best price first, FIFO within it) down to `min_price` (a snapshot)."""
        for price in reversed([p for p in self._prices if p >= min_price]):
            yield from list(self._levels.get(price, ()))

    def ahead_of(self, entry: Entry) -> int:
        """Quantity queued before `entry` at its price."""
        total = 0
        for e in self._levels.get(entry.price, ()):
            if e is entry:
                return total
            total += e.remaining
        raise KeyError("entry is not in the book")

    def levels(self, depth: int | None = None) -> list[tuple[int, int]]:
        """(price, size) ascending, best last; only the best `depth` when given."""
        prices = self._prices if depth is None else self._prices[len(self._prices) - depth:] if depth else []
        return [(p, self._sizes[p]) for p in prices]
