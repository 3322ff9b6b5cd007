"""The executor's view of markets: definitions from `md.market`, latest books from `md.book`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

from libs.common.edge import BookTop
from libs.common.events import BookUpdate, MarketDefinition
from libs.common.families import family_of
from libs.common.money import PriceGrid
from services.executor.exposure import Strike


@dataclass(slots=True)
class MarketState:
    """One market: its definition and the newest book seen (levels ascending, best last)."""

    defn: MarketDefinition
    grid: PriceGrid
    book: BookUpdate | None = None
    book_seen: float = 0.0  # time.monotonic() of the last book

    @property
    def family(self) -> str | None:
        return family_of(self.defn.series_ticker)

    @property
    def fee_multiplier(self) -> Decimal:
        return self.defn.fee_multiplier if self.defn.fee_multiplier is not None else Decimal(1)

    @property
    def fee_type(self) -> str:
        return self.defn.fee_type or "quadratic"

    def top(self) -> BookTop | None:
        if self.book is None:
            return None
        yb, nb = self.book.yes_bids, self.book.no_bids
        return BookTop(yb[-1][0] if yb else None, nb[-1][0] if nb else None,
                       yb[-1][1] if yb else 0, nb[-1][1] if nb else 0)

    def book_age_s(self) -> float | None:
        return None if self.book is None else time.monotonic() - self.book_seen

    def bid(self, leg: str) -> int | None:
        """Best bid of `leg` (what holding it is worth now; selling it means hitting this bid)."""
        top = self.top()
        if top is None:
            return None
        return top.best_yes_bid if leg == "yes" else top.best_no_bid


@dataclass(slots=True)
class Markets:
    """Definitions and books by ticker; also the strike table the risk gate nets events with."""

    by_ticker: dict[str, MarketState] = field(default_factory=dict)
    strikes: dict[str, Strike | None] = field(default_factory=dict)
    pending_books: dict[str, BookUpdate] = field(default_factory=dict)  # books seen before their definition

    def on_market(self, d: MarketDefinition) -> MarketState:
        grid = PriceGrid([(r.start, r.end, r.step) for r in d.price_ranges]) if d.price_ranges \
            else PriceGrid.linear_cent()
        st = self.by_ticker.get(d.ticker)
        if st is None:
            st = self.by_ticker[d.ticker] = MarketState(d, grid)
            book = self.pending_books.pop(d.ticker, None)
            if book is not None:
                self.on_book(book)
        else:
            st.defn, st.grid = d, grid
        self.strikes[d.ticker] = Strike(d.strike_type, d.floor_strike, d.cap_strike) if d.strike_type else None
        return st

    def on_book(self, b: BookUpdate) -> MarketState | None:
        st = self.by_ticker.get(b.ticker)
        if st is None:
            self.pending_books[b.ticker] = b
            return None
        if st.book is not None and b.seq < st.book.seq and b.ts_event <= st.book.ts_event:
            return st  # an older book replayed after a newer one
        st.book, st.book_seen = b, time.monotonic()
        return st

    def get(self, ticker: str) -> MarketState | None:
        return self.by_ticker.get(ticker)
