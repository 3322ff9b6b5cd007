"""What the desk decides about a signal: one pure function, no I/O.

`decide(signal, market, holdings, context, config)` returns the order to reserve and send, or the
reason not to trade. Everything it needs is passed in — the market as the shared view holds it, what
we hold and have working on that leg (read by the desk from the ledger), and the desk's state (now,
pause, daily-loss stop, bankroll) — so sizing, pricing and every decline reason are unit-tested
without PostgreSQL, NATS or a venue. The desk (desk.py) does the reads before and the reservation
and the send after.

Decline reasons, in the order they are checked: expired, paused / mode_changed / live_not_armed /
family_off, daily_loss, low_confidence, unknown_market, market_closed, stale_book, then pricing
(empty_book, no_edge), sizing (no_bankroll, below_min ...), opposite_working, order_working (with a maker
price to move the working order to), at_target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from libs.common.config import Settings, usd_to_ticks
from libs.common.events import Signal
from libs.common.market_view import DEFAULT_FEE_MULTIPLIER, DEFAULT_FEE_TYPE, MarketState
from libs.common.money import ONE_DOLLAR
from services.executor.pricing import quote
from services.executor.risk import Intent
from services.executor.sizing import size_order

ACTIVE = frozenset({"active", "open"})
Leg = Literal["yes", "no"]


def client_order_id(signal_id: str, leg: str, attempt: int) -> str:
    """Deterministic id of the order an intent becomes (DESIGN §6): same intent, same id, one order."""
    digest = hashlib.sha256(f"{signal_id}|{leg}|{attempt}".encode()).hexdigest()[:32]
    return f"kd-{digest}"


class WorkingOrder(Protocol):
    """An open order as the decision sees it (a ledger `orders` row satisfies this)."""

    client_order_id: str
    status: str
    remaining_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Holdings:
    """What we have on one leg of one market: open orders on that leg and contracts held."""

    working: Sequence[WorkingOrder] = ()
    held: int = 0
    opposite: int = 0  # open buy orders on the market's other leg

    def own(self, coid: str) -> WorkingOrder | None:
        """This intent's own open order (a redelivered signal whose order is still open)."""
        return next((o for o in self.working if o.client_order_id == coid), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """The desk's state at decision time."""

    now: datetime
    blocked: str | None = None  # why the control state forbids new orders (paused, family_off ...)
    daily_loss_tripped: bool = False
    bankroll: int = 0  # ticks


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The decision's settings in integer money."""

    min_edge: int  # ticks per contract, after fees, for a resting (maker) order
    taker_min_edge: int
    confidence_floor: float
    kelly_fraction: float
    max_order: int
    sizing: Literal["kelly", "fixed"]
    fixed_budget: int

    @classmethod
    def from_settings(cls, s: Settings) -> Config:
        lim = s.risk
        return cls(min_edge=round(lim.min_edge * ONE_DOLLAR), taker_min_edge=round(lim.taker_min_edge * ONE_DOLLAR),
                   confidence_floor=lim.confidence_floor, kelly_fraction=lim.kelly_fraction, max_order=lim.max_order,
                   sizing=s.sizing, fixed_budget=usd_to_ticks(s.fixed_order_usd))


@dataclass(frozen=True, slots=True, kw_only=True)
class Decline:
    """Not trading this signal; `intent` is what would have been sent (recorded as `blocked`)."""

    reason: str
    intent: Intent
    reprice_to: int | None = None  # order_working: the maker YES price the working order should move to


def leg_of(sig: Signal) -> Leg:
    return "yes" if sig.action == "buy_yes" else "no"


def blank_intent(sig: Signal, st: MarketState | None) -> Intent:
    """The intent a signal stands for before pricing and sizing (its id, market and fee schedule)."""
    leg = leg_of(sig)
    return Intent(client_order_id=client_order_id(sig.id, leg, 0), signal_id=sig.id, leg=leg, family=sig.family,
                  series_ticker=sig.series_ticker, event_ticker=sig.event_ticker, ticker=sig.ticker,
                  book_side="bid" if leg == "yes" else "ask", yes_price=sig.limit_price or 1, count=0,
                  fee_type=st.fee_type if st else DEFAULT_FEE_TYPE,
                  fee_multiplier=st.fee_multiplier if st else DEFAULT_FEE_MULTIPLIER)


def precheck(sig: Signal, st: MarketState | None, ctx: Context, cfg: Config, *, book_fresh: bool) -> str | None:
    """The reasons not to trade that need no price: None when the signal may be priced."""
    if sig.valid_until <= ctx.now:
        return "expired"
    if ctx.blocked:
        return ctx.blocked
    if ctx.daily_loss_tripped:
        return "daily_loss"
    if sig.confidence < cfg.confidence_floor:
        return "low_confidence"
    if st is None:
        return "unknown_market"
    # Kalshi sends no lifecycle event when a market closes at its close time: check the clock too.
    if st.defn.status not in ACTIVE or (st.defn.close_time is not None and st.defn.close_time <= ctx.now):
        return "market_closed"
    # Age from the book's own timestamp: a book replayed from JetStream arrives now but may be old.
    if not book_fresh:
        return "stale_book"
    return None


def decide(sig: Signal, st: MarketState | None, holdings: Holdings, ctx: Context, cfg: Config, *,
           book_fresh: bool) -> Intent | Decline:
    """The order to send for `sig`, or why not. `book_fresh`: the market's book is within its age limit."""
    blank = blank_intent(sig, st)
    reason = precheck(sig, st, ctx, cfg, book_fresh=book_fresh)
    if reason is not None or st is None:
        return Decline(reason=reason or "unknown_market", intent=blank)
    top = st.top()
    if top is None:
        return Decline(reason="stale_book", intent=blank)
    leg = leg_of(sig)
    q = quote(sig.p_model, leg, top, st.grid, fee_type=st.fee_type, fee_multiplier=st.fee_multiplier,
              min_edge=cfg.min_edge, taker_min_edge=cfg.taker_min_edge)
    if q.how is None or q.yes_price is None or q.leg_price is None:
        return Decline(reason=q.reason, intent=blank)
    p_leg = sig.p_model if leg == "yes" else 1 - sig.p_model
    size = size_order(mode=cfg.sizing, p_leg=p_leg, leg_price=q.leg_price, taker=q.how == "taker",
                      confidence=sig.confidence, bankroll=ctx.bankroll, kelly_scale=cfg.kelly_fraction,
                      fixed_budget=cfg.fixed_budget, max_order=cfg.max_order, fee_type=st.fee_type,
                      fee_multiplier=st.fee_multiplier, available=q.available)
    if size.count <= 0:
        return Decline(reason=size.reason, intent=blank)
    if holdings.opposite:
        # Both legs working at once pays the spread twice for nothing: two replicas that decided opposite
        # legs of one book update a moment apart (spot ticks apart), or a model that changed its mind while
        # its order rests (review_working cancels that one when its edge is gone).
        return Decline(reason="opposite_working", intent=blank)
    if holdings.working:
        # A resting post-only order cannot be amended into a taking one: only a maker price moves it.
        return Decline(reason="order_working", intent=blank, reprice_to=q.yes_price if q.how == "maker" else None)
    # Kelly gives the holding we want; what we hold counts towards it.
    add = size.count - holdings.held
    if add <= 0:
        return Decline(reason="at_target", intent=blank)
    maker = q.how == "maker"
    return Intent(client_order_id=blank.client_order_id, signal_id=sig.id, leg=leg, family=sig.family,
                  series_ticker=sig.series_ticker, event_ticker=sig.event_ticker, ticker=sig.ticker,
                  book_side=blank.book_side, yes_price=q.yes_price, count=add,
                  time_in_force="good_till_canceled" if maker else "immediate_or_cancel", post_only=maker,
                  fee_type=st.fee_type, fee_multiplier=st.fee_multiplier)


__all__ = ["Config", "Context", "Decline", "Holdings", "WorkingOrder", "blank_intent", "client_order_id", "decide",
           "leg_of", "precheck"]
