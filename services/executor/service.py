"""The executor service wiring: market data and signals in, orders out, the ledger kept true.

Start-up order: market definitions and books are replayed (last per subject) so prices and strikes
are known; the ledger is reconciled with the venue; only then does the shared durable consumer on
`sig.>` start. Signals that arrived meanwhile wait in JetStream — nothing is lost while we start.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import subjects
from libs.common.bus import Bus, CommandError, ConsumerSpec, TransientError
from libs.common.config import ConfigError, Mode, Settings, usd_to_ticks
from libs.common.db import create_engine, session_factory
from libs.common.events import Alert, BookUpdate, MarketDefinition, OrderEvent, PublicTrade, Signal
from libs.common.kalshi import KalshiWS
from libs.common.kalshi import errors as E
from libs.common.kalshi.factory import environment, rest_client, signer
from libs.common.kalshi.models import Order as RestOrder
from libs.common.logs import get_logger
from libs.common.runtime import ServiceRuntime
from services.executor.broker import Broker
from services.executor.control import ControlWatcher
from services.executor.desk import Desk
from services.executor.ledger import Ledger, fill_summary, order_summary, position_summary
from services.executor.markets import Markets
from services.executor.orders import OrderManager
from services.executor.reconcile import Reconciler
from services.executor.risk import RiskGate, reserved_total

log = get_logger(__name__)

# batch=1: nats-py's fetch of a larger batch can hold the first signal until the batch fills or the
# fetch times out (seen as 2 s p99 in the wire-to-wire benchmark); signals are few, latency matters.
SIGNAL_CONSUMER = ConsumerSpec(stream="SIGNALS", durable="executor", filter_subjects=("sig.>",), batch=1,
                               fetch_timeout_s=0.5, ack_wait_s=60, max_deliver=5)
PRIVATE_CHANNELS = ("fill", "user_orders")
SETTLED = {"determined", "settled", "finalized"}
PAPER_LOCK = "hashtextextended('kdesk:paper-broker', 0)"


class Executor:
    """One executor replica; `start()` brings it up, `stop()` takes it down cleanly."""

    def __init__(self, settings: Settings, bus: Bus, sessions: async_sessionmaker[AsyncSession], broker: Broker,
                 *, ws: KalshiWS | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 loop_interval_s: float = 2.0, unanswered_after_s: float = 30.0,
                 balance_every_s: float = 30.0) -> None:
        self.settings = settings
        self.bus = bus
        self.mode: Mode = settings.mode
        self.broker = broker
        self.ws = ws
        self.clock = clock
        self.loop_interval_s = loop_interval_s
        self.unanswered_after_s = unanswered_after_s
        self.balance_every_s = balance_every_s
        self.markets = Markets(settings.freshness, clock)
        self.ledger = Ledger(sessions, self.mode.value)
        self.orders = OrderManager(broker, self.ledger, self.markets, self._publish, mode=self.mode, clock=clock)
        self.risk = RiskGate(sessions, self.mode.value, settings.risk, self.markets.strikes)
        self.control: ControlWatcher | None = None
        self.desk: Desk | None = None
        self.reconciler: Reconciler | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._paper_lock: Any = None
        self.sessions = sessions
        self._subs: list[Any] = []
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.reconciled_at: float | None = None  # time.monotonic() of the last successful reconciliation
        self.start_error: str | None = None  # why start-up is waiting (the venue is unreachable ...)

    # -- plumbing -------------------------------------------------------------------------------

    async def _publish(self, subject: str, event: OrderEvent) -> None:
        await self.bus.publish_js(subject, event)

    async def _alert(self, alert: Alert) -> None:
        log.warning("alert", family=alert.family, title=alert.title)
        await self.bus.publish_js(subjects.ops_alert(alert.family), alert)

    async def _pause(self, reason: str) -> None:
        assert self.control is not None
        await self.control.set_paused(True, reason)

    async def _hold_paper_lock(self) -> None:
        """Paper mode: the broker lives in this process, so only one replica may run (a second would be
        a second, different exchange). A session advisory lock, held while we run, enforces it."""
        async with self.sessions() as s:
            engine = s.bind
        conn = await engine.connect()  # checked out while we run: this PostgreSQL session holds the lock
        got = await conn.scalar(text(f"SELECT pg_try_advisory_lock({PAPER_LOCK})"))
        await conn.commit()
        if not got:
            await conn.close()
            raise ConfigError("KDESK_MODE=paper runs one executor replica (its paper broker is in-process), and "
                              "another one is running; stop it or run this one in another mode")
        self._paper_lock = conn

    async def start(self) -> None:
        if self.mode is Mode.PAPER:
            await self._hold_paper_lock()
        kv = await self.bus.control()
        self.control = ControlWatcher(kv, self._on_control)
        await self.control.start()
        self.desk = Desk(self.settings, self.broker, self.ledger, self.markets, self.orders, self.risk,
                         self.control.state, self._alert, clock=self.clock)
        self.reconciler = Reconciler(self.broker, self.ledger, self.orders, self.markets, mode=self.mode,
                                     cancel_unknown=self.settings.cancel_unknown_orders,
                                     # Paper positions live in the ledger only (the paper broker starts empty).
                                     compare_positions=self.mode is not Mode.PAPER,
                                     tolerance=usd_to_ticks(self.settings.reconcile_tolerance_usd),
                                     alert=self._alert, pause=self._pause, clock=self.clock,
                                     unanswered_after=timedelta(seconds=self.unanswered_after_s))
        await self._follow_market_data()
        if self.ws is not None:
            self.ws.on_message = self.orders.on_frame
            self._tasks.append(asyncio.create_task(self.ws.run(self._stop)))
            for channel in PRIVATE_CHANNELS:
                await self.ws.subscribe(channel)
        listen = getattr(self.broker, "listen", None)
        if listen is not None:
            listen(self.orders.on_frame)
        await self._readopt_paper_orders()
        await self._until_reconciled()  # also reads the balance into desk.bankroll
        # The first equity snapshot of the day is the daily-loss baseline: take one before trading.
        assert self.desk is not None
        if await self.desk.check_daily_loss(self.desk.bankroll):
            await self._pause("daily_loss")
        await self._serve_commands()
        await self.bus.consume(SIGNAL_CONSUMER, Signal, self._on_signal)
        self._tasks.append(asyncio.create_task(self._loop()))
        self.started.set()
        log.info("executor_started", mode=self.mode.value, sizing=self.settings.sizing,
                 limits=self.settings.risk.as_dict())

    async def _readopt_paper_orders(self) -> None:
        """Paper mode: the broker lives in this process, so after a restart it re-rests the ledger's orders."""
        adopt = getattr(self.broker, "adopt", None)
        if adopt is None:
            return
        for row in await self.ledger.open_orders():
            if row.order_id is None or row.status != "resting":
                continue
            await adopt(RestOrder(order_id=row.order_id, client_order_id=row.client_order_id, ticker=row.ticker,
                                  outcome_side=row.outcome_side, book_side=row.book_side, status="resting",
                                  yes_price=row.yes_price, fill_count=row.fill_count,
                                  remaining_count=row.remaining_count, initial_count=row.initial_count))

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.control is not None:
            await self.control.stop()
        if self._paper_lock is not None:
            with contextlib.suppress(Exception):
                # A pooled connection outlives close(): unlock explicitly (a crashed process's connection
                # drops, and PostgreSQL releases the lock by itself).
                await self._paper_lock.execute(text(f"SELECT pg_advisory_unlock({PAPER_LOCK})"))
                await self._paper_lock.commit()
                await self._paper_lock.close()
            self._paper_lock = None

    # -- inputs ---------------------------------------------------------------------------------

    async def _follow_market_data(self) -> None:
        # Definitions: replay the last per market, then follow. Books: the last per market once, then the
        # core-NATS hot path as well (whichever copy of an update comes first is used; older ones are ignored).
        self._subs.append(await self.bus.follow("md.market.>", MarketDefinition, self._on_market, replay_last=True))
        self._subs.append(await self.bus.follow("md.book.>", BookUpdate, self._on_book, replay_last=False))
        self._subs.append(await self.bus.follow("md.book.>", BookUpdate, self._on_book, replay_last=True))
        on_trade = getattr(self.broker, "on_trade", None)
        if on_trade is not None:
            self._subs.append(await self.bus.follow("md.trade.>", PublicTrade, on_trade, replay_last=False))
        await self.bus.nc.flush()

    async def _on_market(self, d: MarketDefinition) -> None:
        self.markets.on_market(d)
        on_market = getattr(self.broker, "on_market", None)
        if on_market is not None:
            res = on_market(d)
            if asyncio.iscoroutine(res):
                await res
        if d.status in SETTLED and d.result in ("yes", "no"):
            await self.ledger.settle(d.ticker, d.result, self.clock())

    async def _on_book(self, b: BookUpdate) -> None:
        st = self.markets.on_book(b)
        on_book = getattr(self.broker, "on_book", None)
        if on_book is not None:
            res = on_book(b)
            if asyncio.iscoroutine(res):
                await res
        if st is not None and st.book is b and self.desk is not None and self.started.is_set():
            await self.desk.check_arbitrage(st)

    async def _on_signal(self, sig: Signal) -> None:
        assert self.desk is not None
        try:
            await self.desk.on_signal(sig)
        except (E.TransportError, E.ServerError, E.RateLimited, OSError) as e:
            raise TransientError(f"venue unavailable: {e}") from e

    async def _on_control(self, state: Any) -> None:
        if self.desk is None:
            return
        blocked = state.blocks(self.mode, None, self.clock())
        if blocked:
            n = await self.orders.cancel_all(blocked)
            log.warning("trading_blocked", reason=blocked, detail=state.pause_reason, canceled=n)
        else:
            # An operator's resume acknowledges a daily-loss stop; the next check trips it again if the
            # loss still stands (raise the limit to trade on).
            self.desk.daily_loss_tripped = False
            log.info("trading_allowed")

    # -- periodic work --------------------------------------------------------------------------

    async def _reconcile(self) -> dict[str, Any]:
        assert self.reconciler is not None
        rep = await self.reconciler.run()
        self.reconciled_at = time.monotonic()
        if rep.balance is not None and self.desk is not None:
            self.desk.bankroll = rep.balance
        return rep.as_dict()

    async def _until_reconciled(self) -> None:
        """Reconcile before taking any signal; while the venue is unreachable, say so and keep trying.

        Signals wait in JetStream meanwhile (the consumer is not started yet): nothing is lost, and no
        order is sent on a ledger that was not checked against the exchange.
        """
        delays = (1, 2, 5, 10, 30)
        for attempt in itertools.count():
            try:
                await self._reconcile()
                return
            except (E.TransportError, E.ServerError, E.RateLimited, E.MalformedResponse, OSError) as e:
                self.start_error = f"{type(e).__name__}: {e}"
                delay = delays[min(attempt, len(delays) - 1)]
                log.warning("start_reconcile_failed_retrying", error=self.start_error, retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    raise asyncio.CancelledError from None

    async def _refresh_balance(self) -> int:
        assert self.desk is not None
        bal = (await self.broker.balance()).balance
        self.desk.bankroll = bal
        return bal

    async def _loop(self) -> None:
        """Repricing, exits, REST fallback, balance and the daily-loss check, reconciliation."""
        assert self.desk is not None
        last_reconcile = last_balance = asyncio.get_running_loop().time()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.loop_interval_s)
            if self._stop.is_set():
                break
            now = asyncio.get_running_loop().time()
            try:
                if self.ws is None or not self.ws.connected.is_set():
                    await self.orders.poll()  # the private WebSocket is down: poll instead
                await self.desk.review_working()
                await self.desk.check_exits()
                if now - last_balance >= self.balance_every_s:
                    last_balance = now
                    if await self.desk.check_daily_loss(await self._refresh_balance()):
                        await self._pause("daily_loss")
                if now - last_reconcile >= self.settings.reconcile_interval_s:
                    last_reconcile = now
                    await self._reconcile()
            except Exception:
                log.exception("executor_loop_failed")

    # -- commands -------------------------------------------------------------------------------

    async def _serve_commands(self) -> None:
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "status": self._cmd_status, "positions": self._cmd_positions, "orders": self._cmd_orders,
            "fills": self._cmd_fills, "balance": self._cmd_balance, "pause": self._cmd_pause,
            "resume": self._cmd_resume, "flatten": self._cmd_flatten, "reconcile": self._cmd_reconcile,
        }
        for verb, fn in handlers.items():
            self._subs.append(await self.bus.serve("executor", verb, fn))

    async def _cmd_status(self, _: dict[str, Any]) -> dict[str, Any]:
        assert self.desk is not None and self.control is not None
        st = self.control.state
        return {"mode": self.mode.value, "instance": self.settings.instance, "paused": st.paused,
                "pause_reason": st.pause_reason, "blocked": st.blocks(self.mode, None, self.clock()),
                "daily_loss_tripped": self.desk.daily_loss_tripped, "bankroll_ticks": self.desk.bankroll,
                "decisions": dict(self.desk.decisions), "orders_sent": self.orders.sent,
                "open_orders": len(await self.ledger.open_orders()), "limits": self.settings.risk.as_dict(),
                "reserved": await reserved_total(self.ledger.sessions, self.mode.value),
                "last_reconcile": self.reconciler.last.as_dict() if self.reconciler and self.reconciler.last else None,
                **self._freshness()}

    def _freshness(self) -> dict[str, Any]:
        age = self.markets.freshest_book_age_s()
        fresh = age is not None and age <= self.settings.max_book_age_s
        return {"freshest_book_age_s": None if age is None or math.isinf(age) else round(age, 3),
                "fresh_books": sum(self.markets.book_fresh(st) for st in self.markets.by_ticker.values()),
                "waiting_for_fresh_data": not fresh, "freshness_limits": self.settings.freshness.as_dict()}

    async def _cmd_positions(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return [position_summary(p) for p in await self.ledger.positions()]

    async def _cmd_orders(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        if req.get("open"):
            return [order_summary(o) for o in await self.ledger.open_orders()]
        return [order_summary(o) for o in await self.ledger.recent_orders(int(req.get("limit", 50)))]

    async def _cmd_fills(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        return [fill_summary(f) for f in await self.ledger.fills(int(req.get("limit", 50)))]

    async def _cmd_balance(self, _: dict[str, Any]) -> dict[str, Any]:
        bal = await self._refresh_balance()
        return {"balance_ticks": bal, "balance_usd": f"{bal / 10_000:.4f}"}

    async def _cmd_pause(self, req: dict[str, Any]) -> dict[str, Any]:
        await self._pause(str(req.get("reason") or "operator"))
        return {"paused": True}

    async def _cmd_resume(self, _: dict[str, Any]) -> dict[str, Any]:
        assert self.control is not None and self.desk is not None
        await self.control.set_paused(False)
        self.desk.daily_loss_tripped = False
        return {"paused": False}

    async def _cmd_flatten(self, _: dict[str, Any]) -> dict[str, Any]:
        # Allowed while paused: cancels and reduce-only exits only take risk off.
        assert self.desk is not None
        return await self.desk.flatten()

    async def _cmd_reconcile(self, _: dict[str, Any]) -> dict[str, Any]:
        return await self._reconcile()


def make_broker(settings: Settings) -> tuple[Broker, KalshiWS | None]:
    """The venue for this mode: the paper broker, or the Kalshi client (sim, demo, live) and its private WS."""
    if settings.mode is Mode.PAPER:
        from services.executor.paper import PaperBroker

        return PaperBroker(clock=lambda: datetime.now(UTC), balance=usd_to_ticks(settings.paper_balance_usd),
                           freshness=settings.freshness), None
    sign = signer(settings)
    if sign is None:
        raise ConfigError(f"KDESK_MODE={settings.mode.value}: the executor needs the Kalshi key for this environment")
    return rest_client(settings), KalshiWS(environment(settings), sign)


async def run_executor(rt: ServiceRuntime) -> None:
    """Wire and run until stopped."""
    s = rt.settings
    db_url = s.database_url_value()
    if not db_url:
        raise ConfigError("KDESK_DATABASE_URL is not set: the executor keeps its ledger in PostgreSQL")
    engine = create_engine(db_url)
    broker, ws = make_broker(s)
    ex = Executor(s, rt.bus, session_factory(engine), broker, ws=ws)
    # "exchange" is fresh while reconciliations succeed; "md_book" while some book is fresh by its own timestamp.
    rt.freshness.expect("exchange", max(3 * s.reconcile_interval_s, 60))
    rt.freshness.expect("md_book", s.max_book_age_s)

    async def report() -> None:
        while not rt.stopping.is_set():
            if ex.reconciled_at is not None and time.monotonic() - ex.reconciled_at < 3 * s.reconcile_interval_s:
                rt.freshness.mark("exchange")
            age = ex.markets.freshest_book_age_s()
            if age is not None:
                rt.freshness.mark("md_book", age_s=age)
            if ex.desk is None or not ex.started.is_set():
                rt.health.detail = f"starting: {ex.start_error or 'reconciling with the exchange'}"
            elif age is None or age > s.max_book_age_s:
                rt.health.detail = (f"waiting for fresh data: no book newer than {s.max_book_age_s:.0f} s; "
                                    f"signals are declined as stale_book; decisions {dict(ex.desk.decisions)}")
            else:
                rt.health.detail = f"sent {ex.orders.sent}; decisions {dict(ex.desk.decisions)}"
            await asyncio.sleep(2)

    reporter = asyncio.create_task(report())
    try:
        # Start-up waits for the exchange when it is down; a stop request must still end it.
        starting = asyncio.create_task(ex.start())
        stopping = asyncio.create_task(rt.stopping.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a start-up failure (bad key, database down) ends the process with its error
            await rt.stopping.wait()
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        stopping.cancel()
    finally:
        reporter.cancel()
        await ex.stop()
        aclose = getattr(broker, "aclose", None)
        if aclose is not None:
            await aclose()
        await engine.dispose()


__all__ = ["CommandError", "Executor", "make_broker", "run_executor"]
