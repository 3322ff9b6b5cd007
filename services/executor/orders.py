"""Order lifecycle: send an intent, follow it through the venue's updates, record and publish every step.

Sending: the intent row exists (the risk gate wrote it) before any byte goes out; it becomes
`pending`, then the V2 create is sent with the deterministic `client_order_id`. A lost answer leaves
the row `pending`; reconciliation looks the id up on the exchange and adopts what it finds, and a
retried create of the same id is answered 409 and recovered by the client — one order either way.

Following: `user_order` frames carry an order's full totals, `fill` frames one execution each; both
come from the private WebSocket (or the paper broker), and `poll()` reads the same facts over REST as
the fallback. Every transition is written to `order_events` and published on `ord.<event>.<ticker>`
with an id derived from the transition, so replays and the WS/REST overlap are stored once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from libs.common import subjects
from libs.common.config import Mode
from libs.common.db import Order
from libs.common.events import OrderEvent
from libs.common.kalshi import errors as E
from libs.common.kalshi.models import CreateOrderResult, WsFill, WsUserOrder
from libs.common.kalshi.models import Fill as RestFill
from libs.common.kalshi.models import Order as RestOrder
from libs.common.logs import get_logger
from services.executor.broker import Broker
from services.executor.ledger import FillFact, Ledger, OrderState
from services.executor.markets import Markets
from services.executor.risk import Intent

log = get_logger(__name__)

Publish = Callable[[str, OrderEvent], Awaitable[None]]
Clock = Callable[[], datetime]

_KIND = {"resting": "resting", "executed": "filled", "canceled": "canceled"}


class OrderManager:
    """Sends intents and keeps the ledger in line with the venue's order and fill updates."""

    def __init__(self, broker: Broker, ledger: Ledger, markets: Markets, publish: Publish, *, mode: Mode,
                 clock: Clock) -> None:
        self.broker = broker
        self.ledger = ledger
        self.markets = markets
        self.publish = publish
        self.mode = mode
        self.clock = clock
        self.sent = 0
        self.malformed = 0

    # -- sending --------------------------------------------------------------------------------

    async def send(self, intent: Intent) -> Order | None:
        """Send a reserved intent; returns the ledger row after the venue's answer (None if unknown)."""
        now = self.clock()
        # Independent: the ledger row becomes `pending`, the intent goes out on ord.*; both before the send.
        await asyncio.gather(self.ledger.mark_sent(intent.client_order_id, now), self._publish_intent(intent, now))
        try:
            res = await self.broker.create_order(
                intent.ticker, intent.book_side, intent.yes_price, intent.count,  # type: ignore[arg-type]
                time_in_force=intent.time_in_force, client_order_id=intent.client_order_id,  # type: ignore[arg-type]
                post_only=intent.post_only, reduce_only=intent.reduce_only)
        except E.OrderRejected as e:
            log.warning("order_rejected", ticker=intent.ticker, client_order_id=intent.client_order_id,
                        code=e.code, error=str(e))
            row = await self.ledger.finish(intent.client_order_id, "rejected", e.code or type(e).__name__)
            if row is not None:
                await self._emit(row, "rejected", reason=e.code)
            return row
        except (E.TransportError, E.ServerError, E.RateLimited, E.MalformedResponse) as e:
            # The order may or may not exist; reconciliation resolves `pending` by client_order_id.
            log.warning("order_answer_lost", ticker=intent.ticker, client_order_id=intent.client_order_id,
                        error=f"{type(e).__name__}: {e}")
            return await self.ledger.order_by_coid(intent.client_order_id)
        finally:
            self.sent += 1
        return await self._answered(intent, res)

    async def _answered(self, intent: Intent, res: CreateOrderResult) -> Order | None:
        if intent.time_in_force == "good_till_canceled":
            status = "resting" if res.remaining_count > 0 else "executed"
        else:
            status = "executed" if res.fill_count >= intent.count else "canceled"
        remaining = res.remaining_count if status == "resting" else 0
        row = await self.on_state(intent.client_order_id, OrderState(
            res.order_id, status, res.fill_count, remaining, intent.yes_price, client_order_id=intent.client_order_id,
            ts=self.clock()), accepted=True)
        if res.fill_count > 0:
            await self.sync_fills(res.order_id, intent.ticker)  # taker fills: fetch them now, not at the next poll
        log.info("order_placed", ticker=intent.ticker, client_order_id=intent.client_order_id, order_id=res.order_id,
                 side=intent.book_side, price=intent.yes_price, count=intent.count, status=status,
                 filled=res.fill_count, recovered=res.already_existed)
        return row

    async def _publish_intent(self, intent: Intent, ts: datetime) -> None:
        await self.publish(subjects.ord_(intent.event_ticker, intent.ticker), OrderEvent(
            id=f"ord:{intent.client_order_id}:intent", ts_event=ts, mode=self.mode, kind="intent",
            client_order_id=intent.client_order_id, ticker=intent.ticker, event_ticker=intent.event_ticker,
            book_side=intent.book_side, price=intent.yes_price, count=intent.count,  # type: ignore[arg-type]
            remaining_count=intent.count))

    # -- following ------------------------------------------------------------------------------

    async def on_frame(self, frame: dict[str, Any]) -> None:
        """A private WebSocket frame (or the paper broker's): `user_order` or `fill`; others are ignored."""
        kind = frame.get("type")
        try:
            if kind == "user_order":
                o = WsUserOrder.model_validate(frame["msg"])
                coid = o.client_order_id or await self._coid_of(o.order_id)
                if coid is None:
                    log.info("unknown_order_update", order_id=o.order_id, ticker=o.ticker)  # reconciliation decides
                    return
                ts = datetime.fromtimestamp(o.last_updated_ts_ms / 1000, UTC) if o.last_updated_ts_ms else None
                await self.on_state(coid, OrderState(o.order_id, o.status, o.fill_count, o.remaining_count,
                                                     o.yes_price, fees=o.taker_fees + o.maker_fees,
                                                     client_order_id=coid, ts=ts, raw=frame["msg"]))
            elif kind == "fill":
                f = WsFill.model_validate(frame["msg"])
                await self.on_fill(FillFact(f.trade_id, f.order_id, f.ticker, f.book_side, f.outcome_side,
                                            f.yes_price, f.count, f.fee, f.is_taker, f.created_time,
                                            f.client_order_id or None, frame["msg"]))
        except (ValidationError, KeyError, TypeError) as e:
            self.malformed += 1
            log.warning("malformed_private_frame", type=kind, error=str(e)[:300])

    async def _coid_of(self, order_id: str) -> str | None:
        row = await self.ledger.order_by_id(order_id)
        return row.client_order_id if row is not None else None

    async def on_state(self, coid: str, state: OrderState, *, accepted: bool = False) -> Order | None:
        row, changed = await self.ledger.set_state(coid, state)
        if row is None:
            return None
        if accepted:
            await self._emit(row, "accepted")
        if changed:
            kind = _KIND[row.status] if row.status in _KIND else row.status
            if row.status == "resting" and row.fill_count:
                kind = "partially_filled"
            await self._emit(row, kind)  # type: ignore[arg-type]
        return row

    async def on_fill(self, f: FillFact) -> bool:
        st = self.markets.get(f.ticker)
        row = await self.ledger.order_by_id(f.order_id)
        event_ticker = row.event_ticker if row is not None else (st.defn.event_ticker if st else f.ticker)
        series = row.series_ticker if row is not None else (st.defn.series_ticker if st else None)
        family = row.family if row is not None else (st.family if st else None)
        new = await self.ledger.apply_fill(f, event_ticker=event_ticker, series_ticker=series, family=family)
        if new:
            log.info("fill", ticker=f.ticker, order_id=f.order_id, side=f.outcome_side, price=f.yes_price,
                     count=f.count, fee=f.fee, taker=f.is_taker)
            await self.publish(subjects.ord_(event_ticker, f.ticker), OrderEvent(
                id=f"ord:fill:{f.fill_id}", ts_event=f.filled_at, mode=self.mode, kind="fill",
                client_order_id=(row.client_order_id if row else f.client_order_id) or "", order_id=f.order_id,
                ticker=f.ticker, event_ticker=event_ticker, book_side=f.book_side,  # type: ignore[arg-type]
                price=f.yes_price, count=f.count, fill_id=f.fill_id, fee=f.fee, is_taker=f.is_taker))
        return new

    async def _emit(self, row: Order, kind: str, *, reason: str | None = None) -> None:
        event_id = f"ord:{row.client_order_id}:{kind}:{row.fill_count}:{row.remaining_count}"
        ts = self.clock()
        await self.ledger.record_event({
            "event_id": event_id, "client_order_id": row.client_order_id, "order_id": row.order_id,
            "ticker": row.ticker, "kind": kind, "yes_price": row.yes_price, "count": row.initial_count,
            "fill_count": row.fill_count, "remaining_count": row.remaining_count, "reason": reason or row.reason,
            "ts_event": ts})
        await self.publish(subjects.ord_(row.event_ticker, row.ticker), OrderEvent(
            id=event_id, ts_event=ts, mode=self.mode, kind=kind,  # type: ignore[arg-type]
            client_order_id=row.client_order_id, order_id=row.order_id, ticker=row.ticker,
            event_ticker=row.event_ticker, book_side=row.book_side,  # type: ignore[arg-type]
            price=row.yes_price, count=row.initial_count, filled_count=row.fill_count,
            remaining_count=row.remaining_count, reason=reason or row.reason))

    # -- REST fallback ---------------------------------------------------------------------------

    async def sync_order(self, o: RestOrder, coid: str) -> Order | None:
        fees = o.taker_fees + o.maker_fees
        return await self.on_state(coid, OrderState(o.order_id, o.status, o.fill_count, o.remaining_count,
                                                     o.yes_price, fees=fees, client_order_id=coid,
                                                     ts=o.last_update_time))

    async def sync_fills(self, order_id: str | None = None, ticker: str | None = None) -> int:
        """Apply any fills the ledger lacks (REST); the number newly applied."""
        fills = await self.broker.fills(order_id=order_id, ticker=ticker)
        return sum([await self.on_fill(rest_fill(f)) for f in fills])

    async def poll(self) -> None:
        """The fallback for a silent WebSocket: refresh every open order and its fills over REST."""
        for row in await self.ledger.open_orders():
            if row.order_id is None:
                continue
            try:
                o = await self.broker.order(row.order_id)
            except E.NotFound:
                continue
            before = row.fill_count
            await self.sync_order(o, row.client_order_id)
            if o.fill_count != before:
                await self.sync_fills(order_id=row.order_id)

    # -- cancelling ------------------------------------------------------------------------------

    async def cancel(self, row: Order, reason: str) -> bool:
        """Cancel one resting order; True when the venue confirmed (or it was already gone)."""
        if row.order_id is None:
            return False
        try:
            await self.broker.cancel_order(row.order_id, ticker=row.ticker)
        except E.NotFound:
            pass
        except E.OrderRejected as e:
            log.warning("cancel_refused", order_id=row.order_id, code=e.code)
        try:
            o = await self.broker.order(row.order_id)
        except E.NotFound:
            await self.ledger.finish(row.client_order_id, "canceled", reason)
            return True
        await self.ledger.finish_reason(row.client_order_id, reason)
        await self.sync_order(o, row.client_order_id)
        return o.status != "resting"

    async def cancel_all(self, reason: str) -> int:
        """Cancel every open order of ours; the number canceled."""
        n = 0
        for row in await self.ledger.open_orders():
            if row.status == "resting" and await self.cancel(row, reason):
                n += 1
        return n


def rest_fill(f: RestFill) -> FillFact:
    """A REST fill as a ledger fact (REST fills no longer carry client_order_id)."""
    return FillFact(f.trade_id or f.fill_id, f.order_id, f.ticker, f.book_side, f.outcome_side, f.yes_price, f.count,
                    f.fee, f.is_taker, f.created_time, None, f.model_dump(mode="json", by_alias=True))
