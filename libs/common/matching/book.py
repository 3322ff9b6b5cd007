"""A price-level book of resting entries with FIFO queues (price-time priority), reusable by any venue model.

One `LevelBook` holds one side of a bids-only book: price levels, each a FIFO deque of entries with
remaining counts and a running total. The best (highest) price is the last element of a sorted list
of occupied prices that is updated when a level appears or empties, so it is read in O(1) and never
found by scanning the grid. The matching engine keeps one per outcome (YES bids, NO bids); the paper
broker reuses it to model the queue ahead of its own orders.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class Entry:
    """A resting quantity at a price; `ref` is whatever the owner needs (an order, an id)."""

    ref: object
    price: int
    remaining: int


class _Level:
    """One price: the FIFO queue and its total, kept in step."""

    __slots__ = ("queue", "size")

    def __init__(self) -> None:
        self.queue: deque[Entry] = deque()
        self.size = 0


class LevelBook:
    """One side of a book: price levels, best (highest) price first in priority order."""

    __slots__ = ("_levels", "_prices")

    def __init__(self) -> None:
        self._levels: dict[int, _Level] = {}
        self._prices: list[int] = []  # occupied prices, ascending; best is last

    def __len__(self) -> int:
        """Number of occupied price levels."""
        return len(self._prices)

    def add(self, entry: Entry) -> None:
        """Append at the back of its price level (a new arrival has the lowest time priority)."""
        if entry.remaining <= 0:
            raise ValueError(f"cannot rest a non-positive quantity {entry.remaining}")
        level = self._levels.get(entry.price)
        if level is None:
            level = self._levels[entry.price] = _Level()
            insort(self._prices, entry.price)
        level.queue.append(entry)
        level.size += entry.remaining

    def remove(self, entry: Entry) -> None:
        """Take an entry out of the book entirely (a cancel)."""
        level = self._levels[entry.price]
        if level.queue and level.queue[0] is entry:
            level.queue.popleft()  # the common case when matching: O(1)
        else:
            level.queue.remove(entry)
        level.size -= entry.remaining
        if not level.queue:
            self._drop(entry.price)

    def reduce(self, entry: Entry, by: int) -> None:
        """Reduce an entry in place, keeping its queue position; it leaves the book at zero."""
        if not 0 < by <= entry.remaining:
            raise ValueError(f"cannot reduce an entry of {entry.remaining} by {by}")
        if by == entry.remaining:
            self.remove(entry)
            entry.remaining = 0
            return
        entry.remaining -= by
        self._levels[entry.price].size -= by

    def _drop(self, price: int) -> None:
        del self._levels[price]
        del self._prices[bisect_left(self._prices, price)]

    def best(self) -> int | None:
        """Highest price with resting size, or None when this side is empty."""
        return self._prices[-1] if self._prices else None

    def first(self, price: int) -> Entry | None:
        """The entry with time priority at `price` (the next to trade there), or None."""
        level = self._levels.get(price)
        return level.queue[0] if level is not None else None

    def size_at(self, price: int) -> int:
        """Total resting at one price."""
        level = self._levels.get(price)
        return level.size if level is not None else 0

    def size_from(self, min_price: int) -> int:
        """Total resting at prices >= `min_price` (what a crossing order could reach)."""
        i = bisect_left(self._prices, min_price)
        return sum(self._levels[p].size for p in self._prices[i:])

    def entries_from_best(self, min_price: int) -> Iterator[Entry]:
        """Entries in priority order (best price first, FIFO within it) down to `min_price`, as a snapshot."""
        i = bisect_left(self._prices, min_price)
        for price in reversed(self._prices[i:]):
            yield from list(self._levels[price].queue)

    def queue_at(self, price: int) -> list[Entry]:
        """The entries at one price in priority order (first in line first), as a snapshot."""
        level = self._levels.get(price)
        return list(level.queue) if level is not None else []

    def ahead_of(self, entry: Entry) -> int:
        """Quantity queued before `entry` at its price (0 = first in line)."""
        level = self._levels.get(entry.price)
        total = 0
        for e in level.queue if level is not None else ():
            if e is entry:
                return total
            total += e.remaining
        raise KeyError("entry is not in the book")

    def levels(self, depth: int | None = None) -> list[tuple[int, int]]:
        """(price, size) ascending, best last; only the best `depth` levels when given."""
        if depth is not None and depth <= 0:
            return []
        prices = self._prices if depth is None else self._prices[-depth:]
        return [(p, self._levels[p].size) for p in prices]
