"""The contract of the matching engine shared by the simulated exchange and the paper broker.

Conventions (Kalshi's, see `shared/ref/kalshi_api.md` §3.9, §5):
- Prices are YES prices in $0.0001 ticks (1..9999); counts are 1/100 contract.
- `book_side="bid"` buys YES at `price`; `book_side="ask"` sells YES at `price`, which is the same
  as buying NO at `10_000 - price`. The book holds bids only: YES bids (at YES prices) and NO bids
  (at NO prices). An incoming YES bid at p crosses resting NO bids at q when p + q >= 10_000 and
  trades at the *resting* order's price (YES price 10_000 - q); symmetrically for asks.
- Positions are one signed number per market: positive = YES contracts, negative = NO contracts.
  Holding YES and buying NO nets out (each YES+NO pair is redeemed for $1 at once).
- Errors carry the real API's error code and HTTP status so the server can answer with
  `{"error": {"code", "message", "details"}}` without translating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from libs.common.money import PriceGrid

BookSide = Literal["bid", "ask"]
OutcomeSide = Literal["yes", "no"]
TimeInForce = Literal["fill_or_kill", "good_till_canceled", "immediate_or_cancel"]
SelfTradePrevention = Literal["taker_at_cross", "maker"]
OrderStatus = Literal["resting", "canceled", "executed"]
MarketStatus = Literal["initialized", "active", "inactive", "closed", "determined", "finalized"]
Result = Literal["yes", "no"]


class ExchangeError(Exception):
    """A request the exchange refuses, with Kalshi's error code and HTTP status."""

    def __init__(self, code: str, message: str, *, status: int = 400, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details = details


@dataclass
class MarketSpec:
    """What the engine needs to know about a market."""

    ticker: str
    event_ticker: str
    series_ticker: str
    grid: PriceGrid
    fee_type: str = "quadratic"
    fee_multiplier: Decimal = Decimal(1)
    status: MarketStatus = "active"
    result: Result | None = None
    # The shard (matching engine instance) the market lives on; collateral is kept per shard
    # (kalshi_api.md §3.12). Every market of an event is on the same shard.
    exchange_index: int = 0


@dataclass(frozen=True)
class OrderRequest:
    """A V2 create-order request, already converted to integers."""

    ticker: str
    book_side: BookSide
    price: int
    count: int
    time_in_force: TimeInForce
    self_trade_prevention_type: SelfTradePrevention
    client_order_id: str | None = None
    post_only: bool = False
    reduce_only: bool = False
    expiration_time: datetime | None = None
    cancel_order_on_pause: bool = False
    subaccount: int = 0
    order_group_id: str | None = None


@dataclass
class Order:
    """An order's full state (the REST `Order` object, in integers)."""

    order_id: str
    user_id: str
    client_order_id: str | None
    ticker: str
    book_side: BookSide
    price: int  # YES price
    initial_count: int
    remaining_count: int
    fill_count: int
    status: OrderStatus
    time_in_force: TimeInForce
    self_trade_prevention_type: SelfTradePrevention
    post_only: bool
    reduce_only: bool
    expiration_time: datetime | None
    created_time: datetime
    last_update_time: datetime
    taker_fill_cost: int = 0  # $0.0001, what this order paid for contracts filled as taker
    maker_fill_cost: int = 0
    taker_fees: int = 0
    maker_fees: int = 0
    subaccount: int = 0
    order_group_id: str | None = None
    cancel_order_on_pause: bool = False
    last_update_reason: str | None = None  # e.g. "PostOnlyCrossCancel", "Expired", "SelfTradePrevention"

    @property
    def outcome_side(self) -> OutcomeSide:
        """`bid` buys YES, `ask` buys NO."""
        return "yes" if self.book_side == "bid" else "no"


@dataclass(frozen=True)
class Fill:
    """One side of one execution, as the private `fill` feed and `/portfolio/fills` show it."""

    fill_id: str  # == trade_id
    trade_id: str
    order_id: str
    client_order_id: str | None
    user_id: str
    ticker: str
    book_side: BookSide
    outcome_side: OutcomeSide
    yes_price: int
    count: int
    is_taker: bool
    fee: int  # $0.0001, charged on this fill
    post_position: int  # signed position after the fill
    created_time: datetime


@dataclass(frozen=True)
class Trade:
    """A public trade."""

    trade_id: str
    ticker: str
    yes_price: int
    count: int
    taker_outcome_side: OutcomeSide
    taker_book_side: BookSide
    created_time: datetime


@dataclass(frozen=True)
class BookDelta:
    """A change of resting size at one level; `side="no"` levels are at NO prices."""

    ticker: str
    side: OutcomeSide
    price: int
    delta: int  # signed change in 1/100 contract
    ts: datetime
    user_id: str | None = None  # set when an order of this user caused it
    client_order_id: str | None = None


@dataclass
class Position:
    """A user's position in one market."""

    user_id: str
    ticker: str
    position: int = 0  # signed, + = YES
    total_traded: int = 0  # $0.0001
    market_exposure: int = 0  # $0.0001, cost basis of the open position
    realized_pnl: int = 0  # $0.0001
    fees_paid: int = 0  # $0.0001
    last_updated: datetime | None = None


@dataclass(frozen=True)
class Settlement:
    """A settled position (the `/portfolio/settlements` row)."""

    user_id: str
    ticker: str
    event_ticker: str
    market_result: Result
    yes_count: int
    no_count: int
    yes_total_cost: int
    no_total_cost: int
    revenue: int  # $0.0001; $1 per winning contract
    fee_cost: int
    settled_time: datetime


@dataclass(frozen=True)
class OrderUpdate:
    """An order changed (placed, filled, amended, decreased, canceled, expired)."""

    order: Order


@dataclass(frozen=True)
class PositionUpdate:
    """A position changed."""

    position: Position


@dataclass(frozen=True)
class MarketStatusChange:
    """A market's status or result changed."""

    ticker: str
    status: MarketStatus
    result: Result | None
    ts: datetime


EngineEvent = BookDelta | Trade | Fill | OrderUpdate | PositionUpdate | MarketStatusChange


@dataclass
class PlaceResult:
    """The answer to a create: the order as it stands after matching, and the fills it made."""

    order: Order
    fills: list[Fill] = field(default_factory=list)
