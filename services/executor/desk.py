"""The executor's decisions: signal intake, sizing, pricing, caps, repricing, exits and the daily-loss stop.

Every signal ends in exactly one `orders` row keyed by its deterministic client_order_id: an order
that was sent, or a `blocked` row whose reason says why not (expired, paused, no_edge, cap_event ...).
A redelivered signal finds that row and does nothing — no signal is acted on twice, by one replica
or two.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from libs.common.config import Mode, Settings, parse_exits, usd_to_ticks
from libs.common.db import Order
from libs.common.events import Alert, Signal
from libs.common.kalshi import errors as E
from libs.common.logs import get_logger
from libs.common.market_view import DEFAULT_FEE_MULTIPLIER, DEFAULT_FEE_TYPE
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, leg_price
from services.executor.broker import Broker
from services.executor.control import ControlState
from services.executor.ledger import Ledger
from services.executor.markets import Markets, MarketState
from services.executor.orders import OrderManager
from services.executor.pricing import arbitrage, quote
from services.executor.risk import Intent, RiskGate, Verdict
from services.executor.sizing import order_cost, size_order

log = get_logger(__name__)

AlertFn = Callable[[Alert], Awaitable[None]]
ACTIVE = {"active", "open"}


def client_order_id(signal_id: str, leg: str, attempt: int) -> str:
    """Deterministic id of the order an intent becomes (DESIGN §6): same intent, same id, one order."""
    digest = hashlib.sha256(f"{signal_id}|{leg}|{attempt}".encode()).hexdigest()[:32]
    return f"kd-{digest}"


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


class Desk:
    """Turns signals into reserved, sent orders and keeps working orders and positions in check."""

    def __init__(self, settings: Settings, broker: Broker, ledger: Ledger, markets: Markets, orders: OrderManager,
                 risk: RiskGate, control: ControlState, alert: AlertFn, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.mode: Mode = settings.mode
        self.limits = settings.risk
        self.min_edge = round(self.limits.min_edge * ONE_DOLLAR)  # ticks per contract, after fees
        self.taker_min_edge = round(self.limits.taker_min_edge * ONE_DOLLAR)
        self.broker = broker
        self.ledger = ledger
        self.markets = markets
        self.orders = orders
        self.risk = risk
        self.control = control
        self.alert = alert
        self.clock = clock
        self.exits = parse_exits(settings.exits)
        self.bankroll: int = 0
        self.last_signal: dict[str, Signal] = {}
        self.reprices = RateBudget(settings.reprice_per_minute)
        self.decisions: dict[str, int] = {}
        self.daily_loss_tripped = False

    def _count(self, reason: str) -> None:
        self.decisions[reason] = self.decisions.get(reason, 0) + 1

    # -- intake ---------------------------------------------------------------------------------

    async def on_signal(self, sig: Signal) -> None:
        """Decide on one signal; idempotent by the client_order_id derived from it."""
        if sig.action == "none" or sig.mode is not self.mode:
            return
        leg: Literal["yes", "no"] = "yes" if sig.action == "buy_yes" else "no"
        self.last_signal[sig.ticker] = sig
        st = self.markets.get(sig.ticker)
        intent = Intent(client_order_id(sig.id, leg, 0), sig.id, leg, 0, sig.family, sig.series_ticker,
                        sig.event_ticker, sig.ticker, "bid" if leg == "yes" else "ask", sig.limit_price or 1, 0,
                        fee_type=st.fee_type if st else DEFAULT_FEE_TYPE,
                        fee_multiplier=st.fee_multiplier if st else DEFAULT_FEE_MULTIPLIER)
        now = self.clock()
        reason = self._precheck(sig, st, now)
        if reason is None and st is not None:
            intent, reason = await self._price_and_size(sig, st, leg, intent)
        if reason is not None:
            await self._decline(intent, reason, now)
            return
        verdict = await self.risk.reserve(intent, now=now)
        await self._after_reserve(intent, verdict, now)

    async def _after_reserve(self, intent: Intent, verdict: Verdict, now: datetime) -> None:
        if verdict.existing:
            self._count("duplicate")
            log.info("intent_already_decided", client_order_id=intent.client_order_id, status=verdict.status)
            return
        if not verdict.ok:
            self._count(verdict.reason or "blocked")
            log.info("trade_declined", ticker=intent.ticker, reason=verdict.reason, usage=verdict.usage)
            return
        self._count("sent")
        row = await self.orders.send(intent)
        # A pause that arrived while the order was in flight: the order must not stay on the book.
        if row is not None and row.status == "resting" and self.control.blocks(self.mode, intent.family, now):
            await self.orders.cancel(row, "paused")

    def _precheck(self, sig: Signal, st: MarketState | None, now: datetime) -> str | None:
        if sig.valid_until <= now:
            return "expired"
        blocked = self.control.blocks(self.mode, sig.family, now)
        if blocked:
            return blocked
        if self.daily_loss_tripped:
            return "daily_loss"
        if sig.confidence < self.limits.confidence_floor:
            return "low_confidence"
        if st is None:
            return "unknown_market"
        # Kalshi sends no lifecycle event when a market closes at its close time: check the clock too.
        if st.defn.status not in ACTIVE or (st.defn.close_time is not None and st.defn.close_time <= now):
            return "market_closed"
        # Age from the book's own timestamp: a book replayed from JetStream arrives now but may be old.
        if not self.markets.book_fresh(st, now):
            return "stale_book"
        return None

    async def _price_and_size(self, sig: Signal, st: MarketState, leg: Literal["yes", "no"],
                              intent: Intent) -> tuple[Intent, str | None]:
        top = st.top()
        if top is None:
            return intent, "stale_book"
        q = quote(sig.p_model, leg, top, st.grid, fee_type=st.fee_type, fee_multiplier=st.fee_multiplier,
                  min_edge=self.min_edge,
                  taker_min_edge=self.taker_min_edge)
        if q.how is None or q.yes_price is None or q.leg_price is None:
            return intent, q.reason
        working, held = await self.ledger.working_and_held(sig.ticker, leg)
        p_leg = sig.p_model if leg == "yes" else 1 - sig.p_model
        size = size_order(mode=self.settings.sizing, p_leg=p_leg, leg_price=q.leg_price, taker=q.how == "taker",
                          confidence=sig.confidence, bankroll=self.bankroll, kelly_scale=self.limits.kelly_fraction,
                          fixed_budget=usd_to_ticks(self.settings.fixed_order_usd), max_order=self.limits.max_order,
                          fee_type=st.fee_type, fee_multiplier=st.fee_multiplier, available=q.available)
        if size.count <= 0:
            return intent, size.reason
        # Kelly gives the holding we want; what we hold and what is already working count towards it.
        add = size.count - held - sum(o.remaining_count for o in working)
        if working:
            if q.how == "maker":  # a resting post-only order cannot be amended into a taking one
                await self._maybe_reprice(working[0], q.yes_price, "new_signal")
            return intent, "order_working"
        if add <= 0:
            return intent, "at_target"
        tif = "good_till_canceled" if q.how == "maker" else "immediate_or_cancel"
        return Intent(intent.client_order_id, sig.id, leg, 0, sig.family, sig.series_ticker, sig.event_ticker,
                      sig.ticker, "bid" if leg == "yes" else "ask", q.yes_price, add, tif, q.how == "maker",
                      fee_type=st.fee_type, fee_multiplier=st.fee_multiplier), None

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
        st = self.markets.get(row.ticker)
        moved = Intent(row.client_order_id, row.signal_id, row.leg or "", row.attempt, row.family, row.series_ticker,
                       row.event_ticker, row.ticker, row.book_side, yes_price, row.remaining_count,
                       fee_type=st.fee_type if st else DEFAULT_FEE_TYPE,
                       fee_multiplier=st.fee_multiplier if st else DEFAULT_FEE_MULTIPLIER)
        cap = await self.risk.allows_reprice(moved, exclude_coid=row.client_order_id)
        remaining = row.remaining_count
        if cap == "cap_order":
            # A better price for the same size costs more than one order may: keep the size that fits.
            remaining = min(remaining, self.limits.max_order * ONE_CONTRACT // moved.leg_price)
            moved = replace(moved, count=remaining)
            cap = await self.risk.allows_reprice(moved, exclude_coid=row.client_order_id) if remaining > 0 \
                else "cap_order"
        if cap is not None:
            log.info("reprice_declined", order_id=row.order_id, ticker=row.ticker, reason=cap, price=yes_price)
            return False
        try:
            await self.broker.amend_order(row.order_id, ticker=row.ticker, side=row.book_side,  # type: ignore[arg-type]
                                          price=yes_price, count=row.fill_count + remaining)
        except E.NotFound:
            await self.orders.poll()  # it is gone (filled or canceled): read its final state
            return False
        except E.OrderRejected as e:
            if "post only" in str(e).lower():
                # The book moved under the new price; the order stays where it is until the next look.
                log.info("reprice_would_cross", order_id=row.order_id, price=yes_price)
                return False
            # The venue will not amend this order: cancel it; the next signal places a fresh one.
            log.warning("amend_refused_cancelling", order_id=row.order_id, code=e.code, error=str(e))
            await self.orders.cancel(row, "reprice")
            return True
        except (E.TransportError, E.ServerError, E.RateLimited) as e:
            log.warning("amend_failed", order_id=row.order_id, error=f"{type(e).__name__}: {e}")
            return False
        o = await self.broker.order(row.order_id)
        await self.orders.sync_order(o, row.client_order_id)
        log.info("order_repriced", order_id=row.order_id, ticker=row.ticker, old=row.yes_price, new=yes_price,
                 why=why)
        return True

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
                      fee_multiplier=st.fee_multiplier, min_edge=self.min_edge,
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
                try:
                    qp = await self.broker.queue_position(row.order_id)
                    deep = qp.queue_position > self.settings.reprice_queue_contracts * ONE_CONTRACT
                except Exception:
                    deep = False
            if stale or deep:
                await self._maybe_reprice(row, q.yes_price, "stale" if stale else "deep_in_queue")

    # -- arbitrage ------------------------------------------------------------------------------

    async def check_arbitrage(self, st: MarketState) -> None:
        """Buy both legs when YES ask + NO ask + fees < $1; a one-legged fill is hedged or reported."""
        top = st.top()
        now = self.clock()
        if top is None or self.control.blocks(self.mode, st.family, now) or self.daily_loss_tripped \
                or not self.markets.book_fresh(st, now):
            return
        arb = arbitrage(top, fee_type=st.fee_type, fee_multiplier=st.fee_multiplier,
                        min_profit=self.min_edge)
        if arb is None or st.book is None:
            return
        base = f"arb:{st.defn.ticker}:{st.book.seq}"
        legs = [("arb_yes", "bid", arb.yes_price), ("arb_no", "ask", ONE_DOLLAR - arb.no_price)]
        intents = [Intent(client_order_id(base, leg, 0), None, leg, 0, st.family, st.defn.series_ticker,
                          st.defn.event_ticker, st.defn.ticker, side, price, arb.count, "immediate_or_cancel",
                          fee_type=st.fee_type, fee_multiplier=st.fee_multiplier) for leg, side, price in legs]
        filled = []
        for intent in intents:
            verdict = await self.risk.reserve(intent, now=now)
            if not verdict.ok:
                break
            row = await self.orders.send(intent)
            filled.append(row.fill_count if row is not None else 0)
        if len(filled) == 2 and filled[0] == filled[1]:
            log.info("arbitrage_done", ticker=st.defn.ticker, count=filled[0], profit=arb.profit_per_contract)
            return
        # One leg filled more than the other: the excess is an open position; say so loudly rather than
        # chase the other leg at a worse price (exits and caps apply to it like to any position).
        await self.alert(Alert(ts_event=now, mode=self.mode, family="arb", severity="warning",
                               dedupe_key=base, title=f"one-legged arbitrage in {st.defn.ticker}",
                               detail=f"leg fills {filled} of {arb.count}", data={"fills": filled}))

    # -- exits ----------------------------------------------------------------------------------

    async def check_exits(self) -> None:
        """Apply the per-family exit rules (stop-loss, take-profit, max hold, edge reversal)."""
        now = self.clock()
        if not self.exits or self.control.blocks(self.mode, None, now):
            return  # paused means no new orders at all, exits included (flatten is the explicit way out)
        for p in await self.ledger.positions():
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
                await self.exit_position(p.ticker, leg, held, bid, why)

    async def exit_position(self, ticker: str, leg: str, count: int, bid: int, why: str) -> None:
        st = self.markets.get(ticker)
        if st is None:
            return
        # A reduce-only IOC on the opposite book side at our leg's best bid (YES terms for the V2 order).
        side, yes_price = ("ask", bid) if leg == "yes" else ("bid", ONE_DOLLAR - bid)
        stamp = int(self.clock().timestamp()) // 60  # one exit attempt per position per minute
        intent = Intent(client_order_id(f"exit:{ticker}:{stamp}", why, 0), None, "exit", 0, st.family,
                        st.defn.series_ticker, st.defn.event_ticker, ticker, side, yes_price, count,
                        "immediate_or_cancel", reduce_only=True, fee_type=st.fee_type, fee_multiplier=st.fee_multiplier)
        verdict = await self.risk.reserve(intent, now=self.clock(), reduces_only=True)
        if verdict.ok and not verdict.existing:
            log.info("exit", ticker=ticker, leg=leg, count=count, price=bid, why=why)
            await self.orders.send(intent)

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
            await self.exit_position(p.ticker, leg, abs(p.position), bid, "flatten")
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
