"""How an order moves: every venue call about an order, and the ledger kept in line with the answers.

This is the only place that talks to the venue about orders (create, amend, cancel, queue position,
order and fill reads); the desk decides, this module carries it out. Statuses move as
`order_status.py` allows, and every move is written with its `ord.*` event in one transaction (the
outbox, drained by outbox.py), so nothing on the bus can block or lose a trade.

Sending: the intent row exists (the risk gate wrote it) before any byte goes out; it becomes
`pending` — in the reservation's own statement when the desk reserved it to send at once (risk.Send),
else here — then the V2 create is sent with the deterministic `client_order_id`. A lost answer leaves
the row `pending`; reconciliation looks the id up on the exchange and adopts what it finds, and a
retried create of the same id is answered 409 and recovered by the client — one order either way.

Following: `user_order` frames carry an order's full totals, `fill` frames one execution each; both
come from the private WebSocket (or the paper broker), and `poll()` reads the same facts over REST as
the fallback. Event ids derive from the transition, so replays and the WS/REST overlap are stored once.

Routing: Kalshi's exchange is sharded and a call that does not say where to go reaches shard 0
(kalshi_api.md §3.12), where a shard-2 (crypto) order is unknown. Every call here names the order's
market and its shard, from the market definition (`exchange_index`; the ledger row keeps the one the
order was sent with), or asks Kalshi to route by the market (`-1`) when no definition says. A cancel
answered 404 is therefore never read as "already gone": the order is looked up by id and by
client_order_id, canceled again where it really lives, and the ledger follows what the venue shows.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from libs.common.config import Mode
from libs.common.db import Order
from libs.common.kalshi import errors as E
from libs.common.kalshi.models import CreateOrderResult, WsFill, WsUserOrder
from libs.common.kalshi.models import Fill as RestFill
from libs.common.kalshi.models import Order as RestOrder
from libs.common.kalshi.rest import AUTO_ROUTE
from libs.common.logs import get_logger
from services.executor.broker import Broker
from services.executor.ledger import FillFact, Ledger, OrderState
from services.executor.markets import Markets
from services.executor.risk import Intent, Send

log = get_logger(__name__)

Clock = Callable[[], datetime]
AmendOutcome = Literal["amended", "would_cross", "gone", "canceled", "unavailable"]
# The venue did not answer usefully; the call may be tried again later. Anything else is a bug or a
# contract change and surfaces to the caller.
VENUE_UNAVAILABLE = (E.TransportError, E.ServerError, E.RateLimited)


class OrderLifecycle:
    """Sends intents, amends, cancels and reads orders, and applies the venue's order and fill updates."""

    def __init__(self, broker: Broker, ledger: Ledger, markets: Markets, *, mode: Mode, clock: Clock) -> None:
        self.broker = broker
        self.ledger = ledger
        self.markets = markets
        self.mode = mode
        self.clock = clock
        self.sent = 0
        self.malformed = 0
        # The newest answered creates: (client_order_id, perf_counter() as the create left, as its answer
        # came). In memory only, for the wire-to-wire benchmark's stage split (with desk.reserve_times).
        self.create_times: deque[tuple[str, float, float]] = deque(maxlen=1024)

    # -- routing ---------------------------------------------------------------------------------

    def shard(self, ticker: str, row: Order | None = None) -> int | None:
        """The exchange index `ticker` lives on: its market definition's, else the one the order was sent
        with (the ledger row); None when neither says."""
        st = self.markets.get(ticker)
        if st is not None and st.defn.exchange_index is not None:
            return st.defn.exchange_index
        if row is not None and row.exchange_index is not None:
            return row.exchange_index
        return None

    def route(self, ticker: str, row: Order | None = None) -> int:
        """`exchange_index` for a call that names the market: its shard, or -1 (Kalshi routes by the ticker)."""
        shard = self.shard(ticker, row)
        return AUTO_ROUTE if shard is None else shard

    def shards(self, rows: list[Order] | None = None) -> list[int]:
        """Every shard a market we know, or an order of ours, lives on (0 always)."""
        known = {0, *(st.defn.exchange_index for st in self.markets.by_ticker.values()
                      if st.defn.exchange_index is not None)}
        known.update(r.exchange_index for r in rows or () if r.exchange_index is not None)
        return sorted(known)

    # -- sending --------------------------------------------------------------------------------

    def sending(self, ticker: str, *, only_if_flat: bool = False) -> Send:
        """How to reserve an order that is sent right after: `pending` on the shard it goes to."""
        return Send(self.shard(ticker), only_if_flat)

    async def send(self, intent: Intent, *, marked: Send | None = None) -> Order | None:
        """Send a reserved intent; returns the ledger row after the venue's answer (None if unknown).

        `marked`: the reservation already made the row `pending` for this shard (no write before the create).
        Also resumes an intent whose earlier send died before or during the create (same id: one order).
        """
        if marked is not None:
            shard = marked.exchange_index
        else:
            shard = self.shard(intent.ticker)
            await self.ledger.mark_sent(intent.client_order_id, self.clock(), exchange_index=shard)
        t_sent = time.perf_counter()
        try:
            res = await self.broker.create_order(
                intent.ticker, intent.book_side, intent.yes_price, intent.count,  # type: ignore[arg-type]
                time_in_force=intent.time_in_force, client_order_id=intent.client_order_id,  # type: ignore[arg-type]
                post_only=intent.post_only, reduce_only=intent.reduce_only,
                exchange_index=AUTO_ROUTE if shard is None else shard)
        except E.OrderRejected as e:
            log.warning("order_rejected", ticker=intent.ticker, client_order_id=intent.client_order_id,
                        code=e.code, error=str(e))
            return await self.ledger.finish(intent.client_order_id, "rejected", e.code or type(e).__name__)
        except (*VENUE_UNAVAILABLE, E.MalformedResponse) as e:
            # The order may or may not exist; reconciliation resolves `pending` by client_order_id.
            log.warning("order_answer_lost", ticker=intent.ticker, client_order_id=intent.client_order_id,
                        error=f"{type(e).__name__}: {e}")
            return await self.ledger.order_by_coid(intent.client_order_id)
        finally:
            self.sent += 1
        self.create_times.append((intent.client_order_id, t_sent, time.perf_counter()))
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

    # -- working orders -------------------------------------------------------------------------

    async def amend(self, row: Order, yes_price: int, remaining: int) -> AmendOutcome:
        """Move a resting order to `yes_price` with `remaining` contracts left to fill."""
        assert row.order_id is not None
        try:
            await self.broker.amend_order(row.order_id, ticker=row.ticker, side=row.book_side,  # type: ignore[arg-type]
                                          price=yes_price, count=row.fill_count + remaining,
                                          exchange_index=self.route(row.ticker, row))
        except E.NotFound:
            await self.refresh(row)  # it is gone (filled or canceled): read its final state
            return "gone"
        except E.OrderRejected as e:
            if E.is_post_only_cross(e):
                # The book moved under the new price; the order stays where it is until the next look.
                log.info("reprice_would_cross", order_id=row.order_id, price=yes_price)
                return "would_cross"
            # The venue will not amend this order: cancel it; the next signal places a fresh one.
            log.warning("amend_refused_cancelling", order_id=row.order_id, code=e.code, error=str(e))
            await self.cancel(row, "reprice")
            return "canceled"
        except VENUE_UNAVAILABLE as e:
            log.warning("amend_failed", order_id=row.order_id, error=f"{type(e).__name__}: {e}")
            return "unavailable"
        await self.refresh(row)
        return "amended"

    async def queue_position(self, row: Order) -> int | None:
        """Contracts ahead of a resting order at its price; None when the venue cannot say right now."""
        assert row.order_id is not None
        try:
            return (await self.broker.queue_position(row.order_id,
                                                     exchange_index=self.shard(row.ticker, row))).queue_position
        except (E.NotFound, E.OrderRejected):
            # Filled or canceled meanwhile (the venue answers 404, or 400 "order is not resting"): the next
            # update or poll says which.
            return None
        except VENUE_UNAVAILABLE as e:
            log.info("queue_position_unavailable", order_id=row.order_id, error=f"{type(e).__name__}: {e}")
            return None

    async def refresh(self, row: Order) -> Order | None:
        """Read one order from the venue and apply it (with its fills when its fill count moved)."""
        o = await self.read(row)
        if o is None:
            return row
        if o.fill_count != row.fill_count:
            # Fills first: a reader that sees the order's new fill count then finds its fills too.
            await self.sync_fills(order_id=row.order_id)
        return await self.sync_order(o, row.client_order_id)

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
        row, _ = await self.ledger.set_state(coid, state, accepted=accepted)
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
        return new

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
            await self.refresh(row)

    async def find(self, ticker: str, coid: str, row: Order | None = None) -> RestOrder | None:
        """The venue's order with this client_order_id, if it ever reached the exchange (asked of its market's
        shard, then of the shard Kalshi routes the ticker to, in case the definition's shard was wrong)."""
        index = self.route(ticker, row)
        found = await self.broker.find_order(ticker, coid, exchange_index=index)
        if found is None and index != AUTO_ROUTE:
            found = await self.broker.find_order(ticker, coid, exchange_index=AUTO_ROUTE)
        return found

    async def venue_resting(self, rows: list[Order] | None = None) -> list[RestOrder]:
        """Every order of this account resting on the venue (ours or not), on every shard we know of.

        One unnarrowed read plus one per shard other than 0: whether a list without `exchange_index`
        covers every shard or only shard 0 is not documented; asked this way, the answer is the same.
        """
        out: dict[str, RestOrder] = {o.order_id: o for o in await self.broker.orders(status="resting")}
        for shard in self.shards(rows):
            if shard != 0:
                out.update((o.order_id, o) for o in await self.broker.orders(status="resting", exchange_index=shard))
        return list(out.values())

    async def read(self, row: Order) -> RestOrder | None:
        """One of our orders as the venue has it, read on its shard; None when the venue does not know it."""
        if row.order_id is None:
            return None
        try:
            return await self.broker.order(row.order_id, exchange_index=self.shard(row.ticker, row))
        except E.NotFound:
            return None

    async def locate(self, row: Order) -> RestOrder | None:
        """The venue's view of a ledger order: by its id on its shard, else by its client_order_id."""
        return await self.read(row) or await self.find(row.ticker, row.client_order_id, row)

    async def cancel_foreign(self, o: RestOrder) -> bool:
        """Cancel an order the ledger does not know (reconciliation, when configured); True if done."""
        try:
            await self.broker.cancel_order(o.order_id, ticker=o.ticker, exchange_index=o.exchange_index
                                           if o.exchange_index is not None else self.route(o.ticker))
            return True
        except E.KalshiError as e:
            log.warning("unknown_order_cancel_failed", order_id=o.order_id, error=str(e))
            return False

    # -- cancelling ------------------------------------------------------------------------------

    async def cancel(self, row: Order, reason: str) -> bool:
        """Cancel one resting order; True when the venue shows it no longer resting.

        A 404 is not taken as "gone": the ledger says the order rests, so a venue that does not find it
        was asked in the wrong place (or is wrong). The order is looked up by id and by client_order_id;
        found resting, it is canceled again on the shard it reports; found final, the ledger takes that;
        found nowhere, the ledger keeps it resting for reconciliation to decide, and this returns False.
        """
        if row.order_id is None:
            return False
        index = self.route(row.ticker, row)
        confirmed = missing = False
        try:
            await self.broker.cancel_order(row.order_id, ticker=row.ticker, exchange_index=index)
            confirmed = True
        except E.NotFound:
            missing = True
        except E.OrderRejected as e:
            log.warning("cancel_refused", order_id=row.order_id, code=e.code)
        o = await self.locate(row)
        if o is not None and o.status == "resting" and missing:
            where = o.exchange_index if o.exchange_index is not None else AUTO_ROUTE
            log.warning("cancel_not_found_but_resting", order_id=row.order_id, ticker=row.ticker, sent_to=index,
                        lives_on=o.exchange_index)
            try:
                await self.broker.cancel_order(o.order_id, ticker=o.ticker, exchange_index=where)
                confirmed = True
            except (E.NotFound, E.OrderRejected) as e:
                log.error("cancel_retry_failed", order_id=row.order_id, exchange_index=where, error=str(e))
            o = await self.locate(row) or o
        if o is None:
            if confirmed:  # the venue canceled it and cannot show it now: its answer stands
                await self.ledger.finish(row.client_order_id, "canceled", reason)
                return True
            log.error("cancel_unconfirmed_order_not_found", order_id=row.order_id, client_order_id=row.client_order_id,
                      ticker=row.ticker, exchange_index=index, answered_404=missing)
            return False
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
