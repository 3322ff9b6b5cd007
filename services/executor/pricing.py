"""Where to put the order: maker-first against the executor's own latest book (DESIGN §3, §6).

The signal says which leg is cheap; the price is decided here from the freshest book the executor
holds (a signal may be a few book updates old). Maker by default — a post-only bid one tick better
than the best bid on the market's grid, or joining the bid when improving would cross or spend the
edge; taking at the ask only when the taker edge clears the profile's higher taker threshold.
Arbitrage: when YES ask + NO ask + both taker fees < $1, buying one of each locks in the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from libs.common.edge import BookTop, LegEdges, edges
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, PriceGrid, fee


@dataclass(frozen=True, slots=True)
class Quote:
    """An order price decision; `reason` explains a refusal (no_edge, empty_book, ...)."""

    leg: Literal["yes", "no"] | None
    how: Literal["maker", "taker"] | None
    yes_price: int | None  # the V2 price (YES terms)
    leg_price: int | None
    edge: int | None  # ticks per contract, net of the fee
    reason: str
    available: int | None = None  # displayed size at the price we take (taker only)

    @property
    def book_side(self) -> Literal["bid", "ask"] | None:
        return None if self.leg is None else ("bid" if self.leg == "yes" else "ask")


def quote(p_yes: float, leg: Literal["yes", "no"], top: BookTop, grid: PriceGrid, *, fee_type: str,
          fee_multiplier: Decimal, min_edge: int, taker_min_edge: int, allow_taker: bool = True) -> Quote:
    """Price an order to buy `leg` given the model's P(YES) and the current book top."""
    e = edges(p_yes, top, grid, fee_type=fee_type, fee_multiplier=fee_multiplier)
    le: LegEdges = e.yes if leg == "yes" else e.no
    if allow_taker and le.taker_edge is not None and le.taker_edge >= taker_min_edge:
        size = top.no_bid_size if leg == "yes" else top.yes_bid_size
        return Quote(leg, "taker", le.taker_yes_price, le.taker_price, le.taker_edge, "taker_edge", size or None)
    if le.maker_edge is not None and le.maker_edge >= min_edge:
        return Quote(leg, "maker", le.maker_yes_price, le.maker_price, le.maker_edge, "maker_edge")
    if le.maker_edge is None and le.taker_edge is None:
        return Quote(leg, None, None, None, None, "empty_book")
    best = max(x for x in (le.maker_edge, le.taker_edge) if x is not None)
    return Quote(leg, None, None, None, best, "no_edge")


@dataclass(frozen=True, slots=True)
class Arb:
    """Buy YES at its ask and NO at its ask: each pair pays exactly $1 whatever happens."""

    yes_price: int  # YES ask (V2 bid price)
    no_price: int  # NO ask in NO terms (V2 ask at YES price $1 - no_price)
    count: int  # 1/100 contract, limited by both displayed sizes
    profit_per_contract: int  # ticks, after both taker fees


def arbitrage(top: BookTop, *, fee_type: str, fee_multiplier: Decimal, min_profit: int = 1) -> Arb | None:
    """The riskless pair trade when YES ask + NO ask + fees < $1, else None."""
    if top.yes_ask is None or top.no_ask is None:
        return None
    yes_price, no_price = top.yes_ask, top.no_ask
    if not (0 < yes_price < ONE_DOLLAR and 0 < no_price < ONE_DOLLAR):
        return None
    count = min(top.no_bid_size, top.yes_bid_size)  # the YES ask is the NO bid's size and vice versa
    if count <= 0:
        return None
    fees = (fee(count, yes_price, rate="taker", fee_type=fee_type, multiplier=fee_multiplier)
            + fee(count, no_price, rate="taker", fee_type=fee_type, multiplier=fee_multiplier))
    profit = (ONE_DOLLAR - yes_price - no_price) - (fees * ONE_CONTRACT + count - 1) // count
    if profit < min_profit:
        return None
    return Arb(yes_price, no_price, count, profit)
