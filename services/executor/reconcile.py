"""Reconciliation: the exchange's open orders, fills, positions and balance against the ledger (DESIGN §6).

Order of work matters: first resolve our own unanswered orders (by client_order_id), then adopt or
handle resting orders, then copy any fill the ledger lacks — only after that can positions be
compared, since most position differences are just fills not yet seen. What is left is a real
disagreement: small ones are repaired from the exchange's numbers, larger ones pause the desk with
`ops.alert.reconcile`, because trading on a ledger that is wrong is how caps get blown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from libs.common.config import Mode
from libs.common.events import Alert
from libs.common.kalshi import errors as E
from libs.common.logs import get_logger
from services.executor.broker import Broker
from services.executor.ledger import Ledger
from services.executor.markets import Markets
from services.executor.orders import OrderLifecycle

log = get_logger(__name__)

OUR_PREFIX = "kd-"
UNANSWERED_AFTER = timedelta(seconds=30)  # an intent older than any create call can take


@dataclass(slots=True)
class Report:
    """What one reconciliation found and did."""

    adopted: list[str] = field(default_factory=list)
    never_sent: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    unknown_canceled: list[str] = field(default_factory=list)
    fills_repaired: int = 0
    positions_repaired: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    balance: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class Reconciler:
    """Brings the ledger in line with the exchange and says when it cannot."""

    def __init__(self, broker: Broker, ledger: Ledger, orders: OrderLifecycle, markets: Markets, *, mode: Mode,
                 cancel_unknown: bool, tolerance: int, compare_positions: bool = True,
                 alert: Callable[[Alert], Awaitable[None]],
                 pause: Callable[[str], Awaitable[None]], clock: Callable[[], datetime],
                 unanswered_after: timedelta = UNANSWERED_AFTER) -> None:
        self.broker = broker
        self.ledger = ledger
        self.orders = orders
        self.markets = markets
        self.mode = mode
        self.cancel_unknown = cancel_unknown
        self.compare_positions = compare_positions
        self.tolerance = tolerance
        self.alert = alert
        self.pause = pause
        self.clock = clock
        self.unanswered_after = unanswered_after
        self.last: Report | None = None

    async def run(self) -> Report:
        rep = Report()
        await self._unanswered(rep)
        await self._resting(rep)
        rep.fills_repaired = await self.orders.sync_fills()
        if self.compare_positions:
            await self._positions(rep)
        rep.balance = (await self.broker.balance()).total
        self.last = rep
        if rep.disagreements:
            await self.pause("reconcile")
            await self.alert(Alert(ts_event=self.clock(), mode=self.mode, family="reconcile", severity="critical",
                                   dedupe_key=f"reconcile:{self.clock():%Y%m%dT%H}",
                                   title="ledger and exchange disagree: desk paused",
                                   detail="; ".join(f"{d['ticker']}: {d['what']}" for d in rep.disagreements)[:2000],
                                   data={"disagreements": rep.disagreements}))
        log.info("reconciled", adopted=len(rep.adopted), never_sent=len(rep.never_sent), unknown=len(rep.unknown),
                 fills_repaired=rep.fills_repaired, positions_repaired=len(rep.positions_repaired),
                 disagreements=len(rep.disagreements))
        return rep

    async def _unanswered(self, rep: Report) -> None:
        """Intents and pending orders with no exchange id: did the create reach the exchange?"""
        now = self.clock()
        for row in await self.ledger.open_orders():
            if row.order_id is not None:
                continue
            if now - (row.sent_at or row.created_at) < self.unanswered_after:
                continue  # possibly still in flight on another replica
            found = await self.orders.find(row.ticker, row.client_order_id, row)
            if found is None:
                await self.ledger.finish(row.client_order_id, "canceled", "never_reached_exchange")
                rep.never_sent.append(row.client_order_id)
                continue
            await self.orders.sync_order(found, row.client_order_id)
            if found.fill_count:
                await self.orders.sync_fills(order_id=found.order_id)
            rep.adopted.append(row.client_order_id)

    async def _resting(self, rep: Report) -> None:
        open_rows = await self.ledger.open_orders()
        resting = await self.orders.venue_resting(open_rows)
        ours = {o.client_order_id: o for o in open_rows}
        seen: set[str] = set()
        for o in resting:
            coid = o.client_order_id or ""
            row = ours.get(coid) if coid else None
            if row is None and coid:
                row = await self.ledger.order_by_coid(coid)
            if row is not None:
                seen.add(row.client_order_id)
                if (row.status, row.fill_count, row.remaining_count, row.order_id) != (
                        o.status, o.fill_count, o.remaining_count, o.order_id):
                    await self.orders.sync_order(o, row.client_order_id)
                    rep.adopted.append(row.client_order_id)
                continue
            await self._unknown(o, rep)
        # Ledger says resting, exchange no longer lists it: read its final state (by id on its shard, then
        # by client_order_id); only an order neither finds is closed as not on the exchange.
        for coid, row in ours.items():
            if coid in seen or row.order_id is None or row.status != "resting":
                continue
            o = await self.orders.locate(row)
            if o is None:
                await self.ledger.finish(coid, "canceled", "not_on_exchange")
                continue
            await self.orders.sync_order(o, coid)

    async def _unknown(self, o: Any, rep: Report) -> None:
        rep.unknown.append(o.order_id)
        ours = (o.client_order_id or "").startswith(OUR_PREFIX)
        if self.cancel_unknown and await self.orders.cancel_foreign(o):
            rep.unknown_canceled.append(o.order_id)
        action = "canceled" if o.order_id in rep.unknown_canceled else "left resting"
        await self.alert(Alert(
            ts_event=self.clock(), mode=self.mode, family="reconcile", severity="warning",
            dedupe_key=f"unknown_order:{o.order_id}",
            title=f"order {o.order_id} in {o.ticker} is not in the ledger ({action})",
            detail=("it carries a kdesk client_order_id: the ledger lost it" if ours
                    else "placed outside the desk (by hand or another program)"),
            data={"order_id": o.order_id, "ticker": o.ticker, "client_order_id": o.client_order_id,
                  "yes_price": o.yes_price, "remaining_count": o.remaining_count, "action": action}))

    async def _settled(self, ticker: str, rep: Report) -> bool:
        """The exchange dropped a position we hold: if the market settled, settle the ledger from its record."""
        try:
            rows = await self.broker.settlements(ticker=ticker)
        except E.KalshiError as e:
            log.warning("settlement_lookup_failed", ticker=ticker, error=str(e))
            return False
        row = next((r for r in rows if r.ticker == ticker and r.market_result in ("yes", "no")), None)
        if row is None:
            return False
        await self.ledger.settle(ticker, row.market_result, row.settled_time)
        rep.settled.append(ticker)
        return True

    async def _positions(self, rep: Report) -> None:
        exchange = {p.ticker: p for p in await self.broker.positions()}
        ledger = {p.ticker: p for p in await self.ledger.positions(nonzero=False)}
        for ticker in sorted(set(exchange) | {t for t, p in ledger.items() if p.position}):
            ex, mine = exchange.get(ticker), ledger.get(ticker)
            ex_pos = ex.position if ex else 0
            my_pos = mine.position if mine else 0
            ex_fees = ex.fees_paid if ex else None
            if ex_pos == 0 and my_pos != 0 and await self._settled(ticker, rep):
                continue
            if ex_pos != my_pos:
                rep.disagreements.append({"ticker": ticker, "what": f"position exchange {ex_pos} vs ledger {my_pos}",
                                          "exchange": ex_pos, "ledger": my_pos})
                continue
            diff_fees = abs((ex_fees or 0) - (mine.fees_paid_ticks if mine else 0)) if ex else 0
            diff_cost = abs(ex.market_exposure - mine.cost_ticks) if ex and mine else 0
            if diff_fees > self.tolerance or diff_cost > self.tolerance:
                rep.disagreements.append({"ticker": ticker, "what": f"fees off by {diff_fees}, cost by {diff_cost}",
                                          "fees": diff_fees, "cost": diff_cost})
            elif (diff_fees or diff_cost) and ex is not None:
                st = self.markets.get(ticker)
                await self.ledger.set_position(ticker, position=ex.position, cost=ex.market_exposure,
                                               fees=ex.fees_paid,
                                               event_ticker=mine.event_ticker if mine else
                                               (st.defn.event_ticker if st else ticker))
                rep.positions_repaired.append(ticker)
