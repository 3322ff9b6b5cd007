"""The desk: signals in, reserved and sent orders out; working orders, exits and the daily-loss stop.

What to trade is decided in decide.py (pure); how an order moves is orders.py. This module does the
I/O around the decision — the ledger read before it, the locked reservation and the send after it —
and the periodic care of what is working and held.

The hot path is one round trip to PostgreSQL before the create: the decision is made as if nothing were
working or held on the signal's leg (the common case), and reserved, already `pending`, only if that
holds under the risk lock (risk.Send.only_if_flat). When it does not, nothing was written; the leg is read
and the decision made again with what is there (order_working, at_target, a smaller order, a resume).

Every signal ends in exactly one `orders` row keyed by its deterministic client_order_id: an order
that was sent, or a `blocked` row whose reason says why not (expired, paused, no_edge, cap_event ...).
A redelivered signal finds that row and does nothing more — unless its order never left (the first
attempt died between the reservation and the create): then the same order, same id, is sent now.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from libs.common.config import Mode, Settings, parse_exits
from libs.common.db import Order
from libs.common.events import Alert, Signal
from libs.common.logs import get_logger
from libs.common.market_view import DEFAULT_FEE_MULTIPLIER, DEFAULT_FEE_TYPE
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, cost, leg_price
from libs.common.strategies import Strategy, parse_allocation, parse_series, route
from services.executor import order_status
from services.executor.control import ControlState
from services.executor.decide import (
    Config,
    Context,
    Decline,
    Holdings,
    client_order_id,
    decide,
    leg_of,
    precheck,
)
from services.executor.ledger import Ledger
from services.executor.markets import Markets, MarketState
from services.executor.orders import OrderLifecycle
from services.executor.pricing import arbitrage, quote
from services.executor.risk import LEG_BUSY, Intent, Leg, RiskGate, Send, TimeInForce, Verdict
from services.executor.sizing import order_cost

log = get_logger(__name__)

AlertFn = Callable[[Alert], Awaitable[None]]


@dataclass(slots=True)
class RateBudget:
    """At most `per_minute` actions in any rolling minute."""

    per_minute: int
    stamps: list[float] = field(default_factory=list)

    def take(self) -> bool:
        now = time.monotonic()
        self.stamps = [t for t in self.stamps if now - t < 60]
        if len(self.stamps) >= self.per_minute:
            return False
        self.stamps.append(now)
        return True


def intent_of(row: Order, st: MarketState | None) -> Intent:
    """The intent an `orders` row was reserved for (to resume a send that never completed)."""
    return Intent(client_order_id=row.client_order_id, signal_id=row.signal_id, leg=cast(Leg, row.leg),
                  attempt=row.attempt, family=row.family, series_ticker=row.series_ticker,
                  event_ticker=row.event_ticker, ticker=row.ticker,
                  book_side="bid" if row.book_side == "bid" else "ask", yes_price=row.yes_price,
                  count=row.initial_count, time_in_force=cast(TimeInForce, row.time_in_force),
                  post_only=row.post_only, reduce_only=row.reduce_only,
                  fee_type=st.fee_type if st else DEFAULT_FEE_TYPE,
                  fee_multiplier=st.fee_multiplier if st else DEFAULT_FEE_MULTIPLIER,
                  strategy=cast(Strategy, row.strategy))


class Desk:
    """Turns signals into reserved, sent orders and keeps working orders and positions in check."""

    def __init__(self, settings: Settings, ledger: Ledger, markets: Markets, orders: OrderLifecycle,
                 risk: RiskGate, control: ControlState, alert: AlertFn, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.mode: Mode = settings.mode
        self.limits = settings.risk
        self.config = Config.from_settings(settings)
        self.ledger = ledger
        self.markets = markets
        self.orders = orders
        self.risk = risk
        self.control = control
        self.alert = alert
        self.clock = clock
        self.exits = parse_exits(settings.exits)
        self.bankroll: int = 0
        self.allocation = parse_allocation(settings.allocation)
        self.mm_series = parse_series(settings.mm_series)
        self.flip_series = parse_series(settings.quick_flip_series)
        self.last_signal: dict[str, Signal] = {}
        self.reprices = RateBudget(settings.reprice_per_minute)
        self.decisions: dict[str, int] = {}
        self.daily_loss_tripped = False
        # Hot-path stamps of the newest reserved signals: (signal_id, client_order_id, perf_counter() when
        # the signal reached the desk, perf_counter() when its reservation committed). In memory only; the
        # wire-to-wire benchmark splits its latency by them (with orders.create_times).
        self.reserve_times: deque[tuple[str | None, str, float, float]] = deque(maxlen=1024)

    def _count(self, reason: str) -> None:
        self.decisions[reason] = self.decisions.get(reason, 0) + 1

    def context(self, now: datetime, family: str | None, strategy: Strategy = "directional") -> Context:
        """The decision's view of the desk; Kelly sizes from the strategy's share of the bankroll."""
        return Context(now=now, blocked=self.control.blocks(self.mode, family, now),
                       daily_loss_tripped=self.daily_loss_tripped,
                       bankroll=int(self.bankroll * self.allocation.get(strategy, 0.0)))

    # -- intake ---------------------------------------------------------------------------------

    async def on_signal(self, sig: Signal) -> None:
        """Decide on one signal; idempotent by the client_order_id derived from it."""
        if sig.mode is not self.mode:
            return
        strategy = route(sig.series_ticker, mm_series=self.mm_series, flip_series=self.flip_series)
        if strategy == "market_making":
            return  # the maker's market: the signal is its fair value (the maker follows those itself), no order
        if sig.action == "none":
            return
        received = time.perf_counter()
        self.last_signal[sig.ticker] = sig
        st = self.markets.get(sig.ticker)
        now = self.clock()
        leg = leg_of(sig)
        ctx = self.context(now, sig.family, strategy)
        fresh = st is not None and self.markets.book_fresh(st, now)
        guess = decide(sig, st, Holdings(), ctx, self.config, book_fresh=fresh)
        if isinstance(guess, Intent):
            guess = replace(guess, strategy=strategy)
            send = self.orders.sending(guess.ticker, only_if_flat=True)
            verdict = await self.risk.reserve(guess, now=now, send=send)
            if verdict.reason != LEG_BUSY:  # decided in that one statement
                if verdict.ok and not verdict.existing:
                    self.reserve_times.append((sig.id, guess.client_order_id, received, time.perf_counter()))
                await self._after_reserve(guess, verdict, now, send)
                return
        working, held = await self.ledger.working_and_held(sig.ticker, leg)
        holdings = Holdings(working=working, held=held, opposite=await self.ledger.opposite_working(sig.ticker, leg))
        own = holdings.own(client_order_id(sig.id, leg, 0))
        if own is not None:
            await self._resume(cast(Order, own), sig, st, ctx, fresh)
            return
        result = decide(sig, st, holdings, ctx, self.config, book_fresh=fresh)
        if isinstance(result, Decline):
            if result.reprice_to is not None:
                await self._maybe_reprice(cast(Order, holdings.working[0]), result.reprice_to, "new_signal")
            await self._decline(replace(result.intent, strategy=strategy), result.reason, now)
            return
        result = replace(result, strategy=strategy)
        send = self.orders.sending(result.ticker)
        verdict = await self.risk.reserve(result, now=now, send=send)
        if verdict.ok and not verdict.existing:
            self.reserve_times.append((sig.id, result.client_order_id, received, time.perf_counter()))
        await self._after_reserve(result, verdict, now, send)

    async def _resume(self, row: Order, sig: Signal, st: MarketState | None, ctx: Context, fresh: bool) -> None:
        """A redelivered signal whose own order is open: send it if it never left, else nothing."""
        if row.status not in order_status.NOT_YET_ON_EXCHANGE:
            self._count("duplicate")
            log.info("intent_already_decided", client_order_id=row.client_order_id, status=row.status)
            return
        why = precheck(sig, st, ctx, self.config, book_fresh=fresh)
        if why is not None:
            # Reconciliation closes it (or adopts it, if a create did reach the exchange).
            self._count(why)
            log.info("resume_declined", client_order_id=row.client_order_id, status=row.status, reason=why)
            return
        self._count("resumed")
        log.warning("intent_resumed", client_order_id=row.client_order_id, status=row.status, ticker=row.ticker)
        await self._send(intent_of(row, st), ctx.now)

    async def _after_reserve(self, intent: Intent, verdict: Verdict, now: datetime, sent: Send) -> None:
        if verdict.existing:
            self._count("duplicate")
            log.info("intent_already_decided", client_order_id=intent.client_order_id, status=verdict.status)
            return
        if not verdict.ok:
            self._count(verdict.reason or "blocked")
            log.info("trade_declined", ticker=intent.ticker, reason=verdict.reason, usage=verdict.usage)
            return
        self._count("sent")
        await self._send(intent, now, sent)

    async def _send(self, intent: Intent, now: datetime, marked: Send | None = None) -> None:
        row = await self.orders.send(intent, marked=marked)
        # A pause that arrived while the order was in flight: the order must not stay on the book.
        if row is not None and row.status == "resting" and self.control.blocks(self.mode, intent.family, now):
            await self.orders.cancel(row, "paused")

    async def _decline(self, intent: Intent, reason: str, now: datetime) -> None:
        self._count(reason)
        await self.risk.block(intent, now=now, reason=reason)
        log.info("trade_declined", ticker=intent.ticker, signal_id=intent.signal_id, reason=reason)

    # -- working orders -------------------------------------------------------------------------

    async def _maybe_reprice(self, row: Order, yes_price: int, why: str) -> bool:
        if row.status != "resting" or row.order_id is None or row.yes_price == yes_price:
            return False
        if not self.reprices.take():
            log.info("reprice_deferred", order_id=row.order_id, why="rate_limit")
            return False
        moved = replace(intent_of(row, self.markets.get(row.ticker)), yes_price=yes_price, count=row.remaining_count)
        # One order's cap covers what it already filled too (at most its old limit each): an amend of a partly
        # filled order to a better price keeps only the rest that fits (the fault campaign found $4.05 on $4).
        room = self.limits.max_order - cost(row.fill_count, leg_price(row.book_side, row.yes_price),  # type: ignore[arg-type]
                                            rounding="up")
        remaining = min(row.remaining_count, max(room, 0) * ONE_CONTRACT // moved.leg_price)
        moved = replace(moved, count=remaining)
        cap = await self.risk.allows_reprice(moved, exclude_coid=row.client_order_id) if remaining > 0 \
            else "cap_order"
        if cap is not None:
            log.info("reprice_declined", order_id=row.order_id, ticker=row.ticker, reason=cap, price=yes_price)
            return False
        outcome = await self.orders.amend(row, yes_price, remaining)
        if outcome == "amended":
            log.info("order_repriced", order_id=row.order_id, ticker=row.ticker, old=row.yes_price, new=yes_price,
                     why=why)
        return outcome in ("amended", "canceled")

    async def review_working(self) -> None:
        """Reprice stale or deep-in-queue orders; cancel the ones whose edge is gone (bounded per minute)."""
        now = self.clock()
        for row in await self.ledger.open_orders():
            if row.status != "resting" or row.order_id is None or row.leg not in ("yes", "no"):
                continue
            st, sig = self.markets.get(row.ticker), self.last_signal.get(row.ticker)
            top = st.top() if st else None
            if st is None or top is None or sig is None:
                continue
            q = quote(sig.p_model, row.leg, top, st.grid, fee_type=st.fee_type,  # type: ignore[arg-type]
                      fee_multiplier=st.fee_multiplier, min_edge=self.config.min_edge,
                      taker_min_edge=ONE_DOLLAR, allow_taker=False)
            if q.how is None or sig.valid_until < now:
                if self.reprices.take():
                    await self.orders.cancel(row, "edge_gone" if q.how is None else "signal_expired")
                continue
            if q.yes_price is None or q.yes_price == row.yes_price:
                continue  # already at the price we would move it to
            stale = (now - (row.sent_at or row.created_at)).total_seconds() > self.settings.reprice_after_s
            deep = False
            if not stale:  # only then does the queue decide; ask the venue no more than that
                ahead = await self.orders.queue_position(row)
                deep = ahead is not None and ahead > self.settings.reprice_queue_contracts * ONE_CONTRACT
            if stale or deep:
                await self._maybe_reprice(row, q.yes_price, "stale" if stale else "deep_in_queue")

    # -- arbitrage ------------------------------------------------------------------------------

    async def check_arbitrage(self, st: MarketState) -> None:
        """Buy both legs when YES ask + NO ask + fees < $1: leg one immediate-or-cancel, then leg two for
        exactly what leg one filled; a leg two that fills less leaves a position, reported loudly."""
        top = st.top()
        now = self.clock()
        if top is None or self.control.blocks(self.mode, st.family, now) or self.daily_loss_tripped \
                or not self.markets.book_fresh(st, now):
            return
        arb = arbitrage(top, fee_type=st.fee_type, fee_multiplier=st.fee_multiplier,
                        min_profit=self.config.min_edge)
        if arb is None or st.book is None:
            return
        base = f"arb:{st.defn.ticker}:{st.book.seq}"

        def leg(name: Leg, side: str, price: int, count: int) -> Intent:
            return Intent(client_order_id=client_order_id(base, name, 0), signal_id=None, leg=name, family=st.family,
                          series_ticker=st.defn.series_ticker, event_ticker=st.defn.event_ticker,
                          ticker=st.defn.ticker, book_side="bid" if side == "bid" else "ask", yes_price=price,
                          count=count, time_in_force="immediate_or_cancel", fee_type=st.fee_type,
                          fee_multiplier=st.fee_multiplier)

        count = self._fit_order(arb.count, max(arb.yes_price, arb.no_price), st)
        if count <= 0:
            return
        first = leg("arb_yes", "bid", arb.yes_price, count)
        send = self.orders.sending(st.defn.ticker)
        verdict = await self.risk.reserve(first, now=now, send=send)
        if verdict.existing:
            return  # this book's opportunity was already decided (the same update seen again)
        if not verdict.ok:
            log.info("arbitrage_declined", ticker=st.defn.ticker, reason=verdict.reason)
            return
        row = await self.orders.send(first, marked=send)
        got = row.fill_count if row is not None else 0
        if row is None or row.status in order_status.NOT_YET_ON_EXCHANGE:
            await self._one_legged(st, base, now, f"leg one's answer was lost (status "
                                   f"{row.status if row else 'unknown'}); reconciliation will show its fills",
                                   [got, 0], count)
            return
        if got <= 0:
            log.info("arbitrage_missed", ticker=st.defn.ticker, status=row.status)  # nothing filled: nothing to pair
            return
        second = leg("arb_no", "ask", ONE_DOLLAR - arb.no_price, got)
        verdict = await self.risk.reserve(second, now=now, send=send)
        if verdict.existing:
            return
        row2 = await self.orders.send(second, marked=send) if verdict.ok else None
        got2 = row2.fill_count if row2 is not None else 0
        if got2 == got:
            log.info("arbitrage_done", ticker=st.defn.ticker, count=got, profit=arb.profit_per_contract)
            return
        # The excess of leg one is an open position; say so rather than chase leg two at a worse price
        # (exits and caps apply to it like to any position).
        why = f"leg two declined ({verdict.reason})" if not verdict.ok else f"leg two filled {got2} of {got}"
        await self._one_legged(st, base, now, why, [got, got2], count)

    def _fit_order(self, count: int, price: int, st: MarketState) -> int:
        """The largest whole-contract count up to `count` whose worst cost at `price` fits one order's cap."""
        n = min(count, self.limits.max_order * ONE_CONTRACT // max(price, 1)) // ONE_CONTRACT * ONE_CONTRACT
        while n > 0 and order_cost(n, price, taker=True, fee_type=st.fee_type,
                                   fee_multiplier=st.fee_multiplier) > self.limits.max_order:
            n -= ONE_CONTRACT
        return n

    async def _one_legged(self, st: MarketState, base: str, now: datetime, why: str, fills: list[int],
                          wanted: int) -> None:
        await self.alert(Alert(ts_event=now, mode=self.mode, family="arb", severity="warning",
                               dedupe_key=base, title=f"one-legged arbitrage in {st.defn.ticker}",
                               detail=f"{why}; leg fills {fills} of {wanted}", data={"fills": fills}))

    # -- exits ----------------------------------------------------------------------------------

    async def check_exits(self) -> None:
        """Apply the per-family exit rules (stop-loss, take-profit, max hold, edge reversal)."""
        now = self.clock()
        if not self.exits or self.control.blocks(self.mode, None, now):
            return  # paused means no new orders at all, exits included (flatten is the explicit way out)
        for p in await self.ledger.positions():
            if p.strategy != "directional":
                continue  # the maker manages its inventory, quick flip its exit and time limit
            rules = self.exits.get(p.family or "")
            st = self.markets.get(p.ticker)
            leg = "yes" if p.position > 0 else "no"
            held = abs(p.position)
            # Selling our leg = buying the other at its ask, i.e. at $1 - our leg's best bid.
            bid = st.bid(leg) if st else None
            if not rules or bid is None or p.position == 0:
                continue
            avg = p.cost_ticks * ONE_CONTRACT // held
            why = _exit_reason(rules, avg, bid, p.created_at, now, self.last_signal.get(p.ticker), leg)
            if why:
                await self.exit_position(p.ticker, leg, held, bid, why, cast(Strategy, p.strategy))

    async def exit_position(self, ticker: str, leg: str, count: int, bid: int, why: str,
                            strategy: Strategy = "directional") -> bool:
        """A reduce-only IOC at `bid` for `count` of `leg`; False when nothing was sent (no market, or this
        minute's exit of the position was decided already)."""
        st = self.markets.get(ticker)
        if st is None:
            return False
        # A reduce-only IOC on the opposite book side at our leg's best bid (YES terms for the V2 order).
        side, yes_price = ("ask", bid) if leg == "yes" else ("bid", ONE_DOLLAR - bid)
        stamp = int(self.clock().timestamp()) // 60  # one exit attempt per position per minute
        intent = Intent(client_order_id=client_order_id(f"exit:{ticker}:{stamp}", why, 0), signal_id=None, leg="exit",
                        family=st.family, series_ticker=st.defn.series_ticker, event_ticker=st.defn.event_ticker,
                        ticker=ticker, book_side="ask" if side == "ask" else "bid", yes_price=yes_price, count=count,
                        time_in_force="immediate_or_cancel", reduce_only=True, fee_type=st.fee_type,
                        fee_multiplier=st.fee_multiplier, strategy=strategy)
        send = self.orders.sending(ticker)
        verdict = await self.risk.reserve(intent, now=self.clock(), reduces_only=True, send=send)
        if verdict.ok and not verdict.existing:
            log.info("exit", ticker=ticker, leg=leg, count=count, price=bid, why=why)
            await self.orders.send(intent, marked=send)
            return True
        return False

    async def flatten(self) -> dict[str, Any]:
        """Cancel every resting order and exit every position at the best bid."""
        canceled = await self.orders.cancel_all("flatten")
        exited = []
        for p in await self.ledger.positions():
            st = self.markets.get(p.ticker)
            leg = "yes" if p.position > 0 else "no"
            bid = st.bid(leg) if st else None
            if bid is None:
                continue
            await self.exit_position(p.ticker, leg, abs(p.position), bid, "flatten", cast(Strategy, p.strategy))
            exited.append(p.ticker)
        return {"canceled": canceled, "exit_orders": exited}

    # -- daily loss -----------------------------------------------------------------------------

    def mark_value(self, positions: list[Any]) -> int:
        """Open positions at the best bid of their leg (cost basis when no book)."""
        total = 0
        for p in positions:
            st = self.markets.get(p.ticker)
            bid = st.bid("yes" if p.position > 0 else "no") if st else None
            total += p.cost_ticks if bid is None else abs(p.position) * bid // ONE_CONTRACT
        return total

    async def held_collateral(self) -> int:
        """Cash the venue holds for our resting orders (their worst-case cost); not in the balance."""
        total = 0
        for o in await self.ledger.open_orders():
            st = self.markets.get(o.ticker)
            price = leg_price(o.book_side, o.yes_price)  # type: ignore[arg-type]
            if o.remaining_count <= 0 or o.reduce_only or not 0 < price < ONE_DOLLAR:
                continue
            total += order_cost(o.remaining_count, price, taker=True,
                                fee_type=st.fee_type if st else DEFAULT_FEE_TYPE,
                                fee_multiplier=st.fee_multiplier if st else DEFAULT_FEE_MULTIPLIER)
        return total

    async def check_daily_loss(self, balance: int) -> bool:
        """Snapshot equity; True when today's loss (realized + unrealized) passed the limit.

        Equity = available cash + collateral held by resting orders + positions marked at their bid.
        The day's first snapshot (UTC) is the baseline; deposits and withdrawals would move it too.
        """
        now = self.clock()
        value = self.mark_value(await self.ledger.positions()) + await self.held_collateral()
        await self.ledger.snapshot_balance(now, balance, value, self.mode.value)
        start = await self.ledger.first_balance_since(now.replace(hour=0, minute=0, second=0, microsecond=0))
        if start is None:
            return False
        loss = (start.balance_ticks + (start.portfolio_value_ticks or 0)) - (balance + value)
        if loss > self.limits.daily_loss_limit and not self.daily_loss_tripped:
            self.daily_loss_tripped = True
            await self.alert(Alert(ts_event=now, mode=self.mode, family="risk", severity="critical",
                                   dedupe_key=f"daily_loss:{now.date()}", title="daily loss limit reached: paused",
                                   detail=f"loss ${loss / ONE_DOLLAR:.4f} > limit "
                                          f"${self.limits.daily_loss_limit / ONE_DOLLAR:.2f}",
                                   data={"loss_ticks": loss, "limit_ticks": self.limits.daily_loss_limit}))
            return True
        return False


def _exit_reason(rules: dict[str, float], avg: int, bid: int, since: datetime, now: datetime, sig: Signal | None,
                 leg: str) -> str | None:
    if "stop_loss" in rules and bid <= avg - round(rules["stop_loss"] * ONE_DOLLAR):
        return "stop_loss"
    if "take_profit" in rules and bid >= round(rules["take_profit"] * ONE_DOLLAR):
        return "take_profit"
    if "max_hold_s" in rules and now - since > timedelta(seconds=rules["max_hold_s"]):
        return "max_hold"
    if "edge_reversal" in rules and sig is not None:
        p_leg = sig.p_model if leg == "yes" else 1 - sig.p_model
        if p_leg * ONE_DOLLAR < bid - round(rules["edge_reversal"] * ONE_DOLLAR):
            return "edge_reversal"
    return None
