"""Quick flip: buy what the model says is cheap, sell it at a near-term target, give up after a time limit.

Where: the signals of KDESK_QUICK_FLIP_SERIES (libs/common/strategies.py). The entry is the directional
decision (maker-first, Kelly-sized from quick flip's share of the capital) with strategy `quick_flip`;
this module does the rest, every pass of the executor's loop, from the ledger alone (so a restart or
a second replica picks up where the other left off, and a step is never taken twice — every order's id
derives from the entry's):
1. an entry filled (partly or fully): rest a reduce-only sell of what is held at the target —
   entry price + KDESK_QUICK_FLIP_TARGET × (fair value − entry price), and never below the entry plus
   both maker fees and a tick — as leg `flip_exit`; grow it when more of the entry fills;
2. the time limit (KDESK_QUICK_FLIP_TIME_LIMIT_S from the entry's send): cancel the unfilled rest of the
   entry and the resting exit, and sell what is still held at the best bid (reduce-only, immediate-or-
   cancel; nothing is sold without a bid — the position then waits for the exit rules or settlement).
Every step is an `orders` row with its reason, so `kdesk orders` shows the whole flip.

The peers' lesson (../shared/ref/peers.md §d.4): quick flip looked good on paper and lost live because
paper filled what live did not. The paper broker's queue model is what keeps that honest here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from libs.common.config import Settings
from libs.common.db import Order, Position
from libs.common.db.executor import OPEN_ORDER_STATUSES
from libs.common.events import Signal
from libs.common.logs import get_logger
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR
from services.executor.control import ControlState
from services.executor.decide import client_order_id
from services.executor.ledger import Ledger
from services.executor.markets import Markets
from services.executor.orders import OrderLifecycle
from services.executor.risk import Intent, RiskGate
from services.executor.sizing import per_contract_fee

log = get_logger(__name__)

ENTRY_LEGS = ("yes", "no")


def target_price(entry: int, fair_leg: int | None, *, fraction: float, fee_type: str,
                 fee_multiplier: Any) -> int | None:
    """The leg price to sell at: part of the way to fair value, never below break-even plus a tick."""
    fees = per_contract_fee(entry, taker=False, fee_type=fee_type, fee_multiplier=fee_multiplier)
    floor = entry + 2 * fees + 1
    want = entry + round(fraction * (fair_leg - entry)) if fair_leg is not None else floor
    price = max(want, floor)
    return price if price < ONE_DOLLAR else None


@dataclass(slots=True)
class FlipStats:
    exits_rested: int = 0
    exits_grown: int = 0
    entries_abandoned: int = 0
    given_up: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"exits_rested": self.exits_rested, "exits_grown": self.exits_grown,
                "entries_abandoned": self.entries_abandoned, "given_up": self.given_up}


class QuickFlip:
    """Tends quick flip's entries and exits (`tend()`, a job of the executor)."""

    def __init__(self, settings: Settings, ledger: Ledger, markets: Markets, orders: OrderLifecycle,
                 risk: RiskGate, control: ControlState,
                 last_signal: dict[str, Signal], exit_position: Callable[..., Any], *,
                 clock: Callable[[], datetime]) -> None:
        self.mode = settings.mode
        self.fraction = settings.quick_flip_target
        self.time_limit = timedelta(seconds=settings.quick_flip_time_limit_s)
        self.ledger = ledger
        self.sessions = ledger.sessions
        self.markets = markets
        self.orders = orders
        self.risk = risk
        self.control = control
        self.last_signal = last_signal
        self.exit_position = exit_position
        self.clock = clock
        self.stats = FlipStats()

    async def _entries(self) -> list[Order]:
        """Quick flip's entries that are open or still matter (filled, held): newest per ticker last."""
        async with self.sessions() as s:
            held = select(Position.ticker).where(Position.mode == self.mode.value, Position.position != 0,
                                                 Position.strategy == "quick_flip")
            q = select(Order).where(Order.mode == self.mode.value, Order.strategy == "quick_flip",
                                    Order.leg.in_(ENTRY_LEGS),
                                    Order.status.in_(OPEN_ORDER_STATUSES)
                                    | (Order.ticker.in_(held) & (Order.fill_count > 0)))
            return list((await s.scalars(q.order_by(Order.created_at, Order.id))).all())

    async def _held(self, ticker: str) -> tuple[int, int]:
        """(signed position, its cost basis in ticks)."""
        async with self.sessions() as s:
            row = (await s.execute(select(Position.position, Position.cost_ticks).where(
                Position.mode == self.mode.value, Position.ticker == ticker))).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def tend(self) -> None:
        now = self.clock()
        if self.control.blocks(self.mode, None, now):
            return  # paused: no new orders (flatten is the explicit way out)
        latest: dict[str, Order] = {}
        for row in await self._entries():
            expired = now - (row.sent_at or row.created_at) > self.time_limit
            if row.status == "resting" and expired:
                self.stats.entries_abandoned += 1
                log.info("flip_entry_abandoned", ticker=row.ticker, client_order_id=row.client_order_id,
                         filled=row.fill_count)
                await self.orders.cancel(row, "flip_time_limit")
            if row.fill_count > 0:
                latest[row.ticker] = row  # the newest filled entry speaks for the ticker's flip
        for entry in latest.values():
            await self._tend_exit(entry, now)

    async def _tend_exit(self, entry: Order, now: datetime) -> None:
        st = self.markets.get(entry.ticker)
        held, basis = await self._held(entry.ticker)
        leg = entry.outcome_side
        count = held if leg == "yes" else -held  # what we hold of the entry's leg
        exit_coid = client_order_id(entry.client_order_id, "flip_exit", 0)
        row = await self.ledger.order_by_coid(exit_coid)
        if count <= 0 or st is None:
            return
        if now - (entry.sent_at or entry.created_at) > self.time_limit:
            if row is not None and row.status == "resting":
                await self.orders.cancel(row, "flip_time_limit")
            bid = st.bid(leg)
            # One attempt a minute (the exit's id carries the minute) until nothing is held or no bid is left.
            if bid is not None and await self.exit_position(entry.ticker, leg, count, bid, "flip_time_limit",
                                                            "quick_flip"):
                self.stats.given_up += 1
                log.info("flip_given_up", ticker=entry.ticker, held=count, bid=bid)
            return
        if row is not None:
            if row.status == "resting" and row.order_id is not None and row.remaining_count < count:
                # More of the entry filled since the exit rested: sell that too, at the same price.
                if await self.orders.amend(row, row.yes_price, count) == "amended":
                    self.stats.exits_grown += 1
            return
        entry_leg = -(-basis * ONE_CONTRACT // count)  # what a contract cost us, rounded up
        sig = self.last_signal.get(entry.ticker)
        fair = None if sig is None else round((sig.p_model if leg == "yes" else 1 - sig.p_model) * ONE_DOLLAR)
        target = target_price(entry_leg, fair, fraction=self.fraction, fee_type=st.fee_type,
                              fee_multiplier=st.fee_multiplier)
        target = st.grid.round_up(target) if target is not None else None
        if target is None or target >= ONE_DOLLAR:
            return
        # Selling YES is a V2 ask at the YES price; selling NO a V2 bid at $1 - the NO price.
        side, yes_price = ("ask", target) if leg == "yes" else ("bid", ONE_DOLLAR - target)
        intent = Intent(client_order_id=exit_coid, signal_id=entry.signal_id, leg="flip_exit",
                        family=entry.family, series_ticker=entry.series_ticker, event_ticker=entry.event_ticker,
                        ticker=entry.ticker, book_side="ask" if side == "ask" else "bid", yes_price=yes_price,
                        count=count, time_in_force="good_till_canceled",
                        reduce_only=True, fee_type=st.fee_type, fee_multiplier=st.fee_multiplier,
                        strategy="quick_flip")
        send = self.orders.sending(entry.ticker)
        verdict = await self.risk.reserve(intent, now=now, reduces_only=True, send=send)
        if verdict.ok and not verdict.existing:
            self.stats.exits_rested += 1
            log.info("flip_exit_rested", ticker=entry.ticker, leg=leg, count=count, entry=entry_leg, target=target,
                     fair=fair)
            await self.orders.send(intent, marked=send)


__all__ = ["QuickFlip", "target_price"]
