"""What the executor needs from a venue: the Kalshi client's order and portfolio calls.

`KalshiRest` satisfies `Broker` as it is (sim, demo and live modes); `PaperBroker` implements the
same calls in-process for paper mode. Both report order changes and fills as Kalshi private
WebSocket frames (`{"type": "fill" | "user_order", "msg": {...}}`), so one handler serves both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from libs.common.kalshi.models import (
    AmendResult,
    Balance,
    CancelResult,
    CreateOrderResult,
    DecreaseResult,
    Fill,
    MarketPosition,
    Order,
    QueuePosition,
    SettlementRow,
)

BookSide = Literal["bid", "ask"]
TimeInForce = Literal["fill_or_kill", "good_till_canceled", "immediate_or_cancel"]
FrameCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


class Broker(Protocol):
    """Order entry and portfolio reads, in integer money (ticks, 1/100 contract)."""

    async def create_order(self, ticker: str, side: BookSide, price: int, count: int, *,
                           time_in_force: TimeInForce = "good_till_canceled", client_order_id: str | None = None,
                           post_only: bool = False, reduce_only: bool = False,
                           expiration_time: datetime | None = None, **options: Any) -> CreateOrderResult: ...

    async def cancel_order(self, order_id: str, *, ticker: str | None = None) -> CancelResult: ...

    async def amend_order(self, order_id: str, *, ticker: str, side: BookSide, price: int, count: int,
                          client_order_id: str | None = None,
                          updated_client_order_id: str | None = None) -> AmendResult: ...

    async def decrease_order(self, order_id: str, *, reduce_by: int | None = None,
                             reduce_to: int | None = None) -> DecreaseResult: ...

    async def find_order(self, ticker: str, client_order_id: str) -> Order | None: ...

    async def orders(self, *, ticker: str | None = None, status: str | None = None,
                     event_ticker: str | None = None) -> list[Order]: ...

    async def order(self, order_id: str) -> Order: ...

    async def fills(self, *, ticker: str | None = None, order_id: str | None = None,
                    min_ts: int | None = None) -> list[Fill]: ...

    async def positions(self, *, ticker: str | None = None,
                        event_ticker: str | None = None) -> list[MarketPosition]: ...

    async def balance(self) -> Balance: ...

    async def queue_position(self, order_id: str) -> QueuePosition: ...

    async def queue_positions(self, market_tickers: Sequence[str]) -> list[QueuePosition]: ...

    async def settlements(self, *, ticker: str | None = None) -> list[SettlementRow]: ...
