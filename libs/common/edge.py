"""Fee-aware edge of a probability against a Kalshi book top, in integer $0.0001 ticks (DESIGN §3).

Edge is expected value per contract net of the fee for the way the order would fill: taker at the ask with the
taker fee, maker one tick better than the best bid with the maker fee (kalshi_api.md §6). Money is int ticks;
the one float, the probability, is turned into an exact integer before any money arithmetic, and every edge
is rounded down (the conservative side).

Kalshi's book holds bids only (§5): YES bids and NO bids. YES ask = $1 - best NO bid; NO ask = $1 - best YES
bid. Leg prices below are in that leg's own terms (a NO price for the NO leg); the V2 order is always quoted
in YES terms: `bid` = buy YES at the YES price, `ask` = buy NO at YES price $1 - NO price (§3.9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, Count, Price, PriceGrid, fee

Leg = Literal["yes", "no"]
BookSide = Literal["bid", "ask"]

# The probability is scaled to an int in units of 1e-6 tick before subtracting prices, so a float like
# 0.62 (= 0.61999999999999999556) counts as 6200 ticks, not 6199.99...; 1e-6 tick is far below any edge.
_P_SCALE = 10**6


class EdgeError(ValueError):
    """Inputs edge math cannot use: a probability outside [0, 1], a non-positive count, a bad book."""


@dataclass(frozen=True, slots=True)
class BookTop:
    """Best YES and NO bids ($0.0001 ticks, None when that side is empty) and their sizes (1/100 contract)."""

    best_yes_bid: Price | None
    best_no_bid: Price | None
    yes_bid_size: Count = 0
    no_bid_size: Count = 0

    @property
    def yes_ask(self) -> Price | None:
        """Best YES ask: $1 - best NO bid (§5)."""
        return None if self.best_no_bid is None else ONE_DOLLAR - self.best_no_bid

    @property
    def no_ask(self) -> Price | None:
        """Best NO ask: $1 - best YES bid (§5)."""
        return None if self.best_yes_bid is None else ONE_DOLLAR - self.best_yes_bid


@dataclass(frozen=True, slots=True)
class LegEdges:
    """Taker and maker edge for buying one leg; prices in the leg's terms and as the V2 YES price."""

    leg: Leg
    book_side: BookSide
    """V2 side of any order for this leg: "bid" buys YES, "ask" buys NO."""
    taker_price: Price | None
    """Leg price paid when taking (the leg's ask); None when the opposite side is empty."""
    taker_yes_price: Price | None
    """The same price in YES terms, i.e. the V2 order price."""
    taker_fee: Price | None
    """Taker fee in ticks for the whole `count`, rounded up to $0.0001."""
    taker_edge: int | None
    """Expected value per contract after the taker fee, ticks, rounded down."""
    maker_price: Price | None
    """Leg price of the resting bid: best bid + one tick unless that would cross, else the best bid."""
    maker_yes_price: Price | None
    maker_fee: Price | None
    maker_edge: int | None
    maker_improves: bool
    """True when the maker price is one tick better than the best bid (or inside an empty side)."""


@dataclass(frozen=True, slots=True)
class Edges:
    """Edges for buying YES and buying NO at `count` (1/100 contract) against one book top."""

    p_yes: float
    count: Count
    yes: LegEdges
    no: LegEdges


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do: buy a leg as maker or taker at a V2 YES limit price, or nothing, with the reason."""

    action: Literal["buy_yes", "buy_no", "none"]
    mode: Literal["maker", "taker"] | None
    limit_price: Price | None
    """YES price for the V2 order (for buy_no: $1 - the NO price)."""
    edge: int | None
    """Edge per contract in ticks of the chosen order; for "none", the best edge seen (None if no prices)."""
    reason: str
    """"maker_edge", "taker_edge", "no_edge" or "empty_book"."""
    book_side: BookSide | None = None


def _p_units(p: float) -> int:
    """Return p x $1 as an int in 1e-6 ticks, exact for probabilities given to 10 decimals."""
    return round(p * ONE_DOLLAR * _P_SCALE)


def _edge(p_units: int, price: Price, fee_ticks: Price, count: Count) -> int:
    """Floor of p x $1 - price - fee / contracts, in ticks, by integer arithmetic."""
    # per-contract fee = fee_ticks / (count / 100); multiply through by count x 1e6 to stay in ints.
    num = (p_units - price * _P_SCALE) * count - fee_ticks * ONE_CONTRACT * _P_SCALE
    return num // (count * _P_SCALE)


def _yes_maker_price(best_bid: Price | None, ask: Price | None, grid: PriceGrid) -> tuple[Price | None, bool]:
    """YES-terms maker price for buying YES: one tick above the best bid if it stays below the ask."""
    if best_bid is None:
        # Empty bid side: rest one tick below the ask; with no ask either there is nothing to price from.
        return (None, False) if ask is None else (grid.next_below(ask), True)
    better = grid.next_above(best_bid)
    if better is not None and (ask is None or better < ask):
        return better, True
    join = best_bid if grid.is_valid(best_bid) else grid.round_down(best_bid)
    if join is None or (ask is not None and join >= ask):
        return None, False  # locked/crossed top: no non-crossing maker price
    return join, False


def _leg(
    leg: Leg,
    p_units: int,
    taker_yes: Price | None,
    maker_yes: Price | None,
    improves: bool,
    *,
    count: Count,
    fee_type: str,
    fee_multiplier: Decimal | int | str | float,
) -> LegEdges:
    """Edges for one leg from YES-terms taker and maker prices."""

    def to_leg(yes_price: Price | None) -> Price | None:
        """A YES price in this leg's terms."""
        if yes_price is None:
            return None
        return yes_price if leg == "yes" else ONE_DOLLAR - yes_price

    taker_price, maker_price = to_leg(taker_yes), to_leg(maker_yes)
    taker_fee = taker_edge = maker_fee = maker_edge = None
    if taker_price is not None and 0 < taker_price < ONE_DOLLAR:
        # The fee's P(1-P) is symmetric, so the fee at the NO price equals the fee at the YES price.
        taker_fee = fee(count, taker_price, rate="taker", fee_type=fee_type, multiplier=fee_multiplier)
        taker_edge = _edge(p_units, taker_price, taker_fee, count)
    if maker_price is not None and 0 < maker_price < ONE_DOLLAR:
        maker_fee = fee(count, maker_price, rate="maker", fee_type=fee_type, multiplier=fee_multiplier)
        maker_edge = _edge(p_units, maker_price, maker_fee, count)
    return LegEdges(
        leg=leg,
        book_side="bid" if leg == "yes" else "ask",
        taker_price=taker_price,
        taker_yes_price=taker_yes if taker_edge is not None else None,
        taker_fee=taker_fee,
        taker_edge=taker_edge,
        maker_price=maker_price,
        maker_yes_price=maker_yes if maker_edge is not None else None,
        maker_fee=maker_fee,
        maker_edge=maker_edge,
        maker_improves=improves and maker_edge is not None,
    )


def edges(
    p_yes: float,
    top: BookTop,
    grid: PriceGrid,
    *,
    fee_type: str,
    fee_multiplier: Decimal | int | str | float,
    count: Count = ONE_CONTRACT,
) -> Edges:
    """Taker and maker edge per contract for buying YES and buying NO, net of the matching fee (DESIGN §3)."""
    if not (isinstance(p_yes, float | int) and math.isfinite(p_yes) and 0.0 <= p_yes <= 1.0):
        raise EdgeError(f"p_yes must be a probability in [0, 1], got {p_yes!r}")
    if not isinstance(count, int) or count <= 0:
        raise EdgeError(f"count must be a positive int of 1/100 contracts, got {count!r}")
    for name, v in (("best_yes_bid", top.best_yes_bid), ("best_no_bid", top.best_no_bid)):
        if v is not None and not (isinstance(v, int) and 0 < v < ONE_DOLLAR):
            raise EdgeError(f"{name} must be None or an int price in (0, $1) ticks, got {v!r}")
    yes_ask = top.yes_ask
    # Work in YES terms throughout, because the grid and V2 prices are YES prices. Buying NO = selling YES:
    # its ask is the best YES bid, its maker improves the YES-ask side (one tick below $1 - best NO bid).
    yes_maker, yes_improves = _yes_maker_price(top.best_yes_bid, yes_ask, grid)
    no_maker_yes, no_improves = _no_maker_yes_price(top, grid)
    p_units = _p_units(float(p_yes))
    kw = {"count": count, "fee_type": fee_type, "fee_multiplier": fee_multiplier}
    yes = _leg("yes", p_units, yes_ask, yes_maker, yes_improves, **kw)
    no = _leg("no", ONE_DOLLAR * _P_SCALE - p_units, top.best_yes_bid, no_maker_yes, no_improves, **kw)
    return Edges(p_yes=float(p_yes), count=count, yes=yes, no=no)


def _no_maker_yes_price(top: BookTop, grid: PriceGrid) -> tuple[Price | None, bool]:
    """YES-terms price of a resting NO bid: one tick better (lower YES price) than the best NO bid, not crossing."""
    best_yes_bid = top.best_yes_bid
    yes_ask = top.yes_ask  # = $1 - best NO bid: where the best NO bid sits in YES terms
    if yes_ask is None:
        return (None, False) if best_yes_bid is None else (grid.next_above(best_yes_bid), True)
    better = grid.next_below(yes_ask)
    if better is not None and (best_yes_bid is None or better > best_yes_bid):
        return better, True
    join = yes_ask if grid.is_valid(yes_ask) else grid.round_up(yes_ask)
    if join is None or (best_yes_bid is not None and join <= best_yes_bid):
        return None, False
    return join, False


def best_action(e: Edges, *, min_edge: int, taker_min_edge: int) -> Decision:
    """Choose the order: take when a taker edge clears taker_min_edge, else rest when a maker edge clears min_edge."""
    # Maker is the default (cheaper fee, better price). A maker edge is never below the taker edge on the same
    # leg, so "maker whenever it qualifies" would never take; taking is reserved for edges large enough
    # (taker_min_edge, set above min_edge) that waiting in the queue risks losing them.
    if taker_min_edge < min_edge:
        raise EdgeError(f"taker_min_edge ({taker_min_edge}) must be >= min_edge ({min_edge}): taking is the exception")
    takers = [(leg.taker_edge, leg) for leg in (e.yes, e.no) if leg.taker_edge is not None]
    makers = [(leg.maker_edge, leg) for leg in (e.yes, e.no) if leg.maker_edge is not None]
    if takers:
        edge, leg = max(takers, key=lambda t: t[0])
        if edge >= taker_min_edge:
            return Decision(f"buy_{leg.leg}", "taker", leg.taker_yes_price, edge, "taker_edge", leg.book_side)
    if makers:
        edge, leg = max(makers, key=lambda t: t[0])
        if edge >= min_edge:
            return Decision(f"buy_{leg.leg}", "maker", leg.maker_yes_price, edge, "maker_edge", leg.book_side)
    seen = [x for x, _ in takers + makers]
    if not seen:
        return Decision("none", None, None, None, "empty_book")
    return Decision("none", None, None, max(seen), "no_edge")


__all__ = [
    "BookSide",
    "BookTop",
    "Decision",
    "EdgeError",
    "Edges",
    "Leg",
    "LegEdges",
    "best_action",
    "edges",
]
