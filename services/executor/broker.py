"""What the executor needs from a venue: order and portfolio calls, and a stream of order updates.

`KalshiRest` satisfies `Broker` as it is (sim, demo and live modes); `PaperBroker` implements the
same calls in-process for paper mode. Both report order changes and fills as Kalshi private
WebSocket frames (`{"type": "fill" | "user_order", "msg": {...}}`), so one handler serves both:
`VenueUpdates` starts that stream — the private WebSocket for Kalshi (`KalshiUpdates`), and for the
paper broker the market data it fills against, which it subscribes to itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from libs.common.bus import Bus
from libs.common.kalshi import KalshiWS
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
    """Order entry and portfolio reads, in integer money (ticks, 1/100 contract).

    Every order call takes its route — `exchange_index` (the shard; -1 = by the market named) and, where
    the endpoint has one, the market — because Kalshi sends an unrouted call to shard 0 (kalshi_api.md
    §3.12). A venue without shards (the paper broker) accepts and ignores them.
    """

    async def create_order(self, ticker: str, side: BookSide, price: int, count: int, *,
                           time_in_force: TimeInForce = "good_till_canceled", client_order_id: str | None = None,
                           post_only: bool = False, reduce_only: bool = False,
                           expiration_time: datetime | None = None, **options: Any) -> CreateOrderResult: ...

    async def cancel_order(self, order_id: str, *, ticker: str | None = None,
                           exchange_index: int | None = None) -> CancelResult: ...

    async def amend_order(self, order_id: str, *, ticker: str, side: BookSide, price: int, count: int,
                          client_order_id: str | None = None, updated_client_order_id: str | None = None,
                          exchange_index: int | None = None) -> AmendResult: ...

    async def decrease_order(self, order_id: str, *, reduce_by: int | None = None, reduce_to: int | None = None,
                             ticker: str | None = None, exchange_index: int | None = None) -> DecreaseResult: ...

    async def find_order(self, ticker: str, client_order_id: str, *,
                         exchange_index: int | None = None) -> Order | None: ...

    async def orders(self, *, ticker: str | None = None, status: str | None = None,
                     event_ticker: str | None = None, exchange_index: int | None = None) -> list[Order]: ...

    async def order(self, order_id: str, *, exchange_index: int | None = None) -> Order: ...

    async def fills(self, *, ticker: str | None = None, order_id: str | None = None,
                    min_ts: int | None = None) -> list[Fill]: ...

    async def positions(self, *, ticker: str | None = None,
                        event_ticker: str | None = None) -> list[MarketPosition]: ...

    async def balance(self) -> Balance: ...

    async def queue_position(self, order_id: str, *, exchange_index: int | None = None) -> QueuePosition: ...

    async def queue_positions(self, market_tickers: Sequence[str], *,
                              exchange_index: int | None = None) -> list[QueuePosition]: ...

    async def settlements(self, *, ticker: str | None = None) -> list[SettlementRow]: ...

    async def aclose(self) -> None: ...


class VenueUpdates(Protocol):
    """Where the venue's `user_order` and `fill` frames come from."""

    @property
    def live(self) -> bool:
        """Frames are arriving; when False the executor polls the venue over REST instead."""
        ...

    async def start(self, bus: Bus, on_frame: FrameCallback, resting: Sequence[Order]) -> None:
        """Begin delivering frames to `on_frame`; `resting` are the ledger's resting orders (paper re-rests them)."""
        ...

    async def stop(self) -> None: ...


PRIVATE_CHANNELS = ("fill", "user_orders")


class KalshiUpdates:
    """The Kalshi private WebSocket as the executor's update stream (fills and order changes)."""

    def __init__(self, ws: KalshiWS) -> None:
        self.ws = ws
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        return self.ws.connected.is_set()

    async def start(self, bus: Bus, on_frame: FrameCallback, resting: Sequence[Order]) -> None:
        self.ws.on_message = on_frame
        self._task = asyncio.create_task(self.ws.run(self._stop))
        for channel in PRIVATE_CHANNELS:
            await self.ws.subscribe(channel)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
