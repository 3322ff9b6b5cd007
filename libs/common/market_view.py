"""What a service knows about a market: its definition and its newest book, fed by `md.market` and `md.book`.

One view for signals and the executor (nautilus_trader's Cache is the model: one in-process view, fed
by events); the paper broker keeps its own mirror inside its matching engine but shares the fee
defaults. A book's age is measured from its own `ts_event` on an injected clock (see
`libs.common.freshness`), so a replayed or long-buffered book is old however recently it arrived.
Levels are ascending, best last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from libs.common.edge import BookTop
from libs.common.events import BookUpdate, MarketDefinition
from libs.common.families import family_of
from libs.common.freshness import FreshnessLimits
from libs.common.money import PriceGrid

DEFAULT_FEE_TYPE = "quadratic"  # Kalshi's default schedule when a series names none
DEFAULT_FEE_MULTIPLIER = Decimal(1)


def grid_of(d: MarketDefinition) -> PriceGrid:
    """The market's tick grid from its `price_ranges` (whole cents when the definition has none)."""
    return PriceGrid(tuple((r.start, r.end, r.step) for r in d.price_ranges)) if d.price_ranges \
        else PriceGrid.linear_cent()


def top_of(book: BookUpdate) -> BookTop:
    """Best bid and its size on both sides."""
    yb, nb = book.yes_bids, book.no_bids
    return BookTop(yb[-1][0] if yb else None, nb[-1][0] if nb else None, yb[-1][1] if yb else 0,
                   nb[-1][1] if nb else 0)


@dataclass(slots=True)
class MarketState:
    """One market: its definition and the newest book seen."""

    defn: MarketDefinition
    grid: PriceGrid
    book: BookUpdate | None = None

    @property
    def family(self) -> str | None:
        return family_of(self.defn.series_ticker)

    @property
    def fee_multiplier(self) -> Decimal:
        return self.defn.fee_multiplier if self.defn.fee_multiplier is not None else DEFAULT_FEE_MULTIPLIER

    @property
    def fee_type(self) -> str:
        return self.defn.fee_type or DEFAULT_FEE_TYPE

    def top(self) -> BookTop | None:
        return None if self.book is None else top_of(self.book)

    def bid(self, leg: str) -> int | None:
        """Best bid of `leg` (what holding it is worth now; selling it means hitting this bid)."""
        top = self.top()
        if top is None:
            return None
        return top.best_yes_bid if leg == "yes" else top.best_no_bid


@dataclass(slots=True)
class MarketView:
    """Definitions and books by ticker, with book ages from the source's timestamps."""

    limits: FreshnessLimits = field(default_factory=FreshnessLimits)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    by_ticker: dict[str, MarketState] = field(default_factory=dict)
    pending_books: dict[str, BookUpdate] = field(default_factory=dict)  # books seen before their definition

    def on_market(self, d: MarketDefinition) -> MarketState:
        st = self.by_ticker.get(d.ticker)
        if st is None:
            st = self.by_ticker[d.ticker] = MarketState(d, grid_of(d))
            book = self.pending_books.pop(d.ticker, None)
            if book is not None:
                self.on_book(book)
        else:
            st.defn, st.grid = d, grid_of(d)
        return st

    def on_book(self, b: BookUpdate) -> MarketState | None:
        """Keep `b` when it is newer than the book held; the market's state (None before its definition)."""
        st = self.by_ticker.get(b.ticker)
        if st is None:
            held = self.pending_books.get(b.ticker)
            if held is None or not _older(b, held):
                self.pending_books[b.ticker] = b
            return None
        if st.book is not None and _older(b, st.book):
            return st  # an older book replayed or delivered after a newer one
        st.book = b
        return st

    def get(self, ticker: str) -> MarketState | None:
        return self.by_ticker.get(ticker)

    def book_age_s(self, st: MarketState, now: datetime | None = None) -> float | None:
        """Age of the market's book from its source timestamp (None: no book yet)."""
        if st.book is None:
            return None
        return self.limits.age_s(st.book.ts_event, now or self.clock())

    def book_fresh(self, st: MarketState, now: datetime | None = None) -> bool:
        """True when the market has a book no older than the book limit."""
        age = self.book_age_s(st, now)
        return age is not None and age <= self.limits.book_s

    def freshest_book_age_s(self) -> float | None:
        """Age of the newest book of any market (None: no book at all) — for heartbeats."""
        now = self.clock()
        ages = [a for st in self.by_ticker.values() if (a := self.book_age_s(st, now)) is not None]
        return min(ages, default=None)


def _older(b: BookUpdate, than: BookUpdate) -> bool:
    # seq restarts when feeds reconnects, so a lower seq alone does not make a book older; its time must too.
    return b.ts_event < than.ts_event or (b.ts_event == than.ts_event and b.seq < than.seq)
