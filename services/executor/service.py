"""The executor service wiring: market data and signals in, orders out, the ledger kept true.

Start-up order: the outbox drain starts (events committed before a crash go out first); market
definitions and books are replayed (last per subject) so prices and strikes are known; the venue's
update stream starts; the ledger is reconciled with the venue; only then does the shared durable
consumer on `sig.>` start. Signals that arrived meanwhile wait in JetStream — nothing is lost while
we start.

Layout: decide.py decides, orders.py moves orders (order_status.py says how they may move),
libs/common/market_view.py (markets.py) is what the desk knows about a market, risk.py reserves caps,
ledger.py and outbox.py are the record and its echo on `ord.*`, commands.py answers `cmd.executor.*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import subjects
from libs.common.backoff import Backoff
from libs.common.bus import Bus, CommandError, ConsumerSpec, TransientError
from libs.common.config import ConfigError, Mode, Settings, usd_to_ticks
from libs.common.db import create_engine, session_factory
from libs.common.events import Alert, BookUpdate, MarketDefinition, Signal
from libs.common.jobs import Job, Jobs
from libs.common.kalshi import KalshiWS
from libs.common.kalshi import errors as E
from libs.common.kalshi.contract import ContractReport, check_contract
from libs.common.kalshi.factory import environment, rest_client, signer
from libs.common.kalshi.models import Order as RestOrder
from libs.common.kalshi.rest import KalshiRest
from libs.common.logs import get_logger
from libs.common.runtime import ServiceRuntime
from libs.common.strategies import parse_allocation, strategy_caps
from services.executor.broker import Broker, KalshiUpdates, VenueUpdates
from services.executor.commands import ExecutorCommands
from services.executor.control import ControlWatcher
from services.executor.desk import Desk
from services.executor.ledger import Ledger
from services.executor.market_making import MarketMaker
from services.executor.markets import Markets
from services.executor.orders import VENUE_UNAVAILABLE, OrderLifecycle
from services.executor.outbox import Outbox
from services.executor.quick_flip import QuickFlip
from services.executor.reconcile import Reconciler
from services.executor.risk import RiskGate

log = get_logger(__name__)

# batch=1: nats-py's fetch of a larger batch can hold the first signal until the batch fills or the
# fetch times out (seen as 2 s p99 in the wire-to-wire benchmark); signals are few, latency matters.
# The durable lives on the mode's own stream (the bus scopes it), so modes never split signals.
SIGNAL_CONSUMER = ConsumerSpec(stream="SIGNALS", durable="executor", filter_subjects=("sig.>",), batch=1,
                               fetch_timeout_s=0.5, ack_wait_s=60, max_deliver=5)
SETTLED = {"determined", "settled", "finalized"}
PAPER_LOCK = "hashtextextended('kdesk:paper-broker', 0)"
VENUE_DOWN = (*VENUE_UNAVAILABLE, E.MalformedResponse, OSError)


class Executor:
    """One executor replica; `start()` brings it up, `stop()` takes it down cleanly."""

    def __init__(self, settings: Settings, bus: Bus, sessions: async_sessionmaker[AsyncSession], broker: Broker,
                 *, updates: VenueUpdates | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 loop_interval_s: float = 2.0, unanswered_after_s: float = 30.0,
                 balance_every_s: float = 30.0) -> None:
        self.settings = settings
        self.bus = bus
        self.mode: Mode = settings.mode
        self.broker = broker
        self.updates = updates
        self.clock = clock
        self.loop_interval_s = loop_interval_s
        self.unanswered_after_s = unanswered_after_s
        self.balance_every_s = balance_every_s
        self.sessions = sessions
        self.markets = Markets(settings.freshness, clock)
        # One try per publish: the drain's own backoff retries, and a failed publish delays nothing else.
        self.outbox = Outbox(sessions, self.mode.value, lambda subject, ev: bus.publish_js(subject, ev, attempts=1),
                             clock=clock)
        self.ledger = Ledger(sessions, self.mode.value, clock=clock, on_event=self.outbox.wake)
        self.orders = OrderLifecycle(broker, self.ledger, self.markets, mode=self.mode, clock=clock)
        # No wake on the reservation's `intent` event: the drain would compete with the create for the
        # loop and the pool; the venue's answer wakes it a moment later (or the drain's idle sweep does).
        # Its own connection: a reservation is one statement on the wire (no checkout ping, no BEGIN).
        self.risk = RiskGate(sessions, self.mode.value, settings.risk, self.markets.strikes, dedicated=True,
                             strategy_caps=strategy_caps(parse_allocation(settings.allocation),
                                                         settings.risk.max_portfolio))
        self.jobs = Jobs(self._job_failing)
        self.commands = ExecutorCommands(self)
        self.control: ControlWatcher | None = None
        self.desk: Desk | None = None
        self.maker: MarketMaker | None = None
        self.flip: QuickFlip | None = None
        self.reconciler: Reconciler | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._paper_lock: Any = None
        self._subs: list[Any] = []
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        self.reconciled_at: float | None = None  # time.monotonic() of the last successful reconciliation
        self.start_error: str | None = None  # why start-up is waiting (the venue is unreachable ...)
        self.contract: ContractReport | None = None  # the last Kalshi contract check (None = not run)

    # -- plumbing -------------------------------------------------------------------------------

    async def _alert(self, alert: Alert) -> None:
        log.warning("alert", family=alert.family, title=alert.title)
        await self.bus.publish_js(subjects.ops_alert(alert.family), alert)

    async def pause(self, reason: str) -> None:
        assert self.control is not None
        await self.control.set_paused(True, reason)

    async def _job_failing(self, job: Job, failing: bool) -> None:
        await self._alert(Alert(
            ts_event=self.clock(), mode=self.mode, family="executor", severity="warning" if failing else "info",
            dedupe_key=f"job:{self.settings.instance}:{job.name}",
            title=(f"executor job '{job.name}' keeps failing ({job.consecutive} in a row)" if failing
                   else f"executor job '{job.name}' recovered"),
            detail=job.last_error or "", data={"job": job.name, **job.as_dict()}))

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
        self.desk = Desk(self.settings, self.ledger, self.markets, self.orders, self.risk, self.control.state,
                         self._alert, clock=self.clock)
        desk = self.desk
        self.maker = MarketMaker(self.settings, self.sessions, self.markets, self.orders, self.risk,
                                 self.control.state, self._alert, daily_loss_tripped=lambda: desk.daily_loss_tripped,
                                 clock=self.clock)
        self.flip = QuickFlip(self.settings, self.ledger, self.markets, self.orders, self.risk, self.control.state,
                              self.desk.last_signal, self.desk.exit_position, clock=self.clock)
        self.reconciler = Reconciler(self.broker, self.ledger, self.orders, self.markets, mode=self.mode,
                                     cancel_unknown=self.settings.cancel_unknown_orders,
                                     # Paper positions live in the ledger only (the paper broker starts empty).
                                     compare_positions=self.mode is not Mode.PAPER,
                                     tolerance=usd_to_ticks(self.settings.reconcile_tolerance_usd),
                                     alert=self._alert, pause=self.pause, clock=self.clock,
                                     unanswered_after=timedelta(seconds=self.unanswered_after_s))
        self._tasks.append(asyncio.create_task(self.outbox.run(self._stop), name="outbox"))
        if isinstance(self.broker, KalshiRest):  # the next create's signature made before the order exists
            self._tasks.append(asyncio.create_task(self.broker.keep_signed_ahead(self._stop), name="sign_ahead"))
        await self._follow_market_data()
        await self.risk.sync_strikes()  # the replayed definitions' strikes, for event netting in PostgreSQL
        if self.updates is not None:
            await self.updates.start(self.bus, self.orders.on_frame, await self._resting())
        await self._until_reconciled()  # also reads the balance into desk.bankroll
        if self._contract_checked:
            await self._until_contract_checked()  # the desk never trades on a contract it does not understand
        # The first equity snapshot of the day is the daily-loss baseline: take one before trading.
        if await self.desk.check_daily_loss(self.desk.bankroll):
            await self.pause("daily_loss")
        self._subs.extend(await self.commands.serve(self.bus))
        await self.bus.consume(SIGNAL_CONSUMER, Signal, self._on_signal)
        self._add_jobs()
        self._tasks.extend(self.jobs.start(self._stop))
        if self.maker.enabled:
            # Every replica follows the maker's fair values (the signal consumer hands each signal to one
            # replica only, and the quoting one must see them all): the last per market, then live.
            for series in sorted(self.maker.series):
                self._subs.append(await self.bus.follow(f"sig.*.{subjects.token(series)}.>", Signal,
                                                        self.maker.on_signal, replay_last=True))
            self._tasks.append(asyncio.create_task(self.maker.run(self._stop), name="market_maker"))
        self.started.set()
        log.info("executor_started", mode=self.mode.value, sizing=self.settings.sizing,
                 limits=self.settings.risk.as_dict())

    async def _resting(self) -> Sequence[RestOrder]:
        """The ledger's resting orders in the venue's shape (the paper broker re-rests them after a restart)."""
        return [RestOrder(order_id=row.order_id, client_order_id=row.client_order_id, ticker=row.ticker,
                          outcome_side=row.outcome_side, book_side=row.book_side, status="resting",
                          yes_price=row.yes_price, fill_count=row.fill_count, remaining_count=row.remaining_count,
                          initial_count=row.initial_count, exchange_index=row.exchange_index)
                for row in await self.ledger.open_orders() if row.order_id is not None and row.status == "resting"]

    def _add_jobs(self) -> None:
        assert self.desk is not None
        desk, every = self.desk, self.loop_interval_s
        # The REST fallback runs only while the update stream is down.
        self.jobs.add("poll", every, self.orders.poll, when=lambda: self.updates is None or not self.updates.live)
        self.jobs.add("review_working", every, desk.review_working)
        self.jobs.add("exits", every, desk.check_exits)
        if desk.flip_series:
            self.jobs.add("quick_flip", every, self.flip.tend)
        self.jobs.add("daily_loss", self.balance_every_s, self._check_daily_loss)
        self.jobs.add("strikes", every, self.risk.sync_strikes)  # definitions learned since (no write if none)
        self.jobs.add("reconcile", self.settings.reconcile_interval_s, self.reconcile)
        if self._contract_checked:
            self.jobs.add("contract", self.settings.contract_check_interval_s, self.check_contract)

    async def _check_daily_loss(self) -> None:
        assert self.desk is not None
        if await self.desk.check_daily_loss(await self.refresh_balance()):
            await self.pause("daily_loss")

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        if self.updates is not None:
            await self.updates.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.control is not None:
            await self.control.stop()
        await self.risk.aclose()
        if self.maker is not None:
            await self.maker.aclose()
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
        # Definitions: replay the last per market, then follow (few, and each one matters).
        self._subs.append(await self.bus.follow("md.market.>", MarketDefinition, self._on_market, replay_last=True))
        # Books: follow live on core NATS first, then take the last one per market once from JetStream —
        # in that order nothing published in between is missed, and each book is handled once (the view
        # ignores a replayed book older than a live one).
        self._subs.append(await self.bus.follow("md.book.>", BookUpdate, self._on_book, replay_last=False))
        replayed = await self.bus.replay_last("md.book.>", BookUpdate, self._on_book)
        log.info("books_replayed", books=replayed)
        await self.bus.nc.flush()

    async def _on_market(self, d: MarketDefinition) -> None:
        self.markets.on_market(d)
        if d.status in SETTLED and d.result in ("yes", "no"):
            await self.ledger.settle(d.ticker, d.result, self.clock())

    async def _on_book(self, b: BookUpdate) -> None:
        st = self.markets.on_book(b)
        if st is not None and st.book is b and self.desk is not None and self.started.is_set():
            self.maker.on_book(st)
            await self.desk.check_arbitrage(st)

    async def _on_signal(self, sig: Signal) -> None:
        assert self.desk is not None
        try:
            await self.desk.on_signal(sig)
        except (*VENUE_UNAVAILABLE, OSError) as e:
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

    # -- the Kalshi contract ----------------------------------------------------------------------

    @property
    def _contract_checked(self) -> bool:
        # Only a real Kalshi client speaks the wire format (the paper broker is in-process).
        return self.settings.contract_check_on and isinstance(self.broker, KalshiRest)

    async def _until_contract_checked(self) -> None:
        """A first contract verdict before any signal; while the venue is unreachable, keep trying."""
        backoff = Backoff(base_s=1.0, cap_s=30.0)
        while True:
            try:
                await self.check_contract()
                return
            except VENUE_DOWN as e:
                self.start_error = f"contract check: {type(e).__name__}: {e}"
                log.warning("start_contract_check_failed_retrying", error=self.start_error)
                if await backoff.sleep(self._stop):
                    raise asyncio.CancelledError from None

    async def check_contract(self) -> dict[str, Any] | None:
        """Hold Kalshi's answers to the shapes the desk reads (libs/common/kalshi/contract.py).

        A mismatch pauses trading (reason `contract: ...`, shown in `status`) and alerts
        `ops.alert.contract` with every problem; a changed fee schedule is alerted too. A network
        failure gives no verdict and raises (the job retries). A pause is never lifted here: the
        operator resumes once the API change is understood.
        """
        assert isinstance(self.broker, KalshiRest)
        previous = self.contract
        same_market = previous.market if previous is not None else None
        try:
            report = await check_contract(self.broker, self.clock(), market_ticker=same_market)
        except E.NotFound:  # the market checked last time is gone: take another open one
            report = await check_contract(self.broker, self.clock())
        self.contract = report
        if not report.ok:
            log.error("kalshi_contract_mismatch", problems=list(report.problems), market=report.market,
                      series=report.series)
            await self.pause(f"contract: {report.problems[0]}"[:400])
            digest = hashlib.sha256("\n".join(report.problems).encode()).hexdigest()[:12]
            await self._alert(Alert(
                ts_event=self.clock(), mode=self.mode, family="contract", severity="critical",
                dedupe_key=f"contract:{digest}",
                title=f"Kalshi API contract mismatch ({len(report.problems)} problem(s)): trading paused",
                detail="\n".join(report.problems), data=report.as_dict()))
        elif previous is not None and not previous.ok:
            await self._alert(Alert(
                ts_event=self.clock(), mode=self.mode, family="contract", severity="info",
                dedupe_key="contract:ok", title="Kalshi API contract check passes again; trading stays paused "
                                                "until an operator resumes", data=report.as_dict()))
        if (previous is not None and previous.fee_fingerprint and report.fee_fingerprint
                and previous.series == report.series and previous.fee_fingerprint != report.fee_fingerprint):
            await self._alert(Alert(
                ts_event=self.clock(), mode=self.mode, family="contract", severity="warning",
                dedupe_key=f"contract:fees:{report.fee_fingerprint}",
                title=f"Kalshi fee schedule of {report.series} changed",
                detail=f"was {previous.fee_schedule}, now {report.fee_schedule}",
                data={"before": previous.fee_schedule, "after": report.fee_schedule}))
        return report.as_dict()

    # -- reconciliation and balance -------------------------------------------------------------

    async def reconcile(self) -> dict[str, Any]:
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
        backoff = Backoff(base_s=1.0, cap_s=30.0)
        while True:
            try:
                await self.reconcile()
                return
            except VENUE_DOWN as e:
                self.start_error = f"{type(e).__name__}: {e}"
                log.warning("start_reconcile_failed_retrying", error=self.start_error)
                if await backoff.sleep(self._stop):
                    raise asyncio.CancelledError from None

    async def refresh_balance(self) -> int:
        assert self.desk is not None
        bal = (await self.broker.balance()).total  # every shard's collateral (balance_breakdown)
        self.desk.bankroll = bal
        return bal


def make_broker(settings: Settings) -> tuple[Broker, VenueUpdates]:
    """The venue for this mode and its update stream: the paper broker (both at once), or the Kalshi
    client (sim, demo, live) and its private WebSocket."""
    if settings.mode is Mode.PAPER:
        from services.executor.paper import PaperBroker

        paper = PaperBroker(clock=lambda: datetime.now(UTC), balance=usd_to_ticks(settings.paper_balance_usd),
                            freshness=settings.freshness)
        return paper, paper
    sign = signer(settings)
    if sign is None:
        raise ConfigError(f"KDESK_MODE={settings.mode.value}: the executor needs the Kalshi key for this environment")
    return rest_client(settings), KalshiUpdates(KalshiWS(environment(settings), sign))


async def run_executor(rt: ServiceRuntime) -> None:
    """Wire and run until stopped."""
    s = rt.settings
    engine = create_engine(s.require_database_url("the executor keeps its ledger in PostgreSQL"))
    broker, updates = make_broker(s)
    ex = Executor(s, rt.bus, session_factory(engine), broker, updates=updates)
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
            failing = ex.jobs.failing()
            trouble = f"failing: {failing}; " if failing else ""
            if ex.outbox.consecutive_failures:
                trouble += f"ord.* publish failing ({ex.outbox.last_error}), events kept in the outbox; "
            if ex.desk is None or not ex.started.is_set():
                rt.health.detail = f"starting: {ex.start_error or 'reconciling with the exchange'}"
            elif age is None or age > s.max_book_age_s:
                rt.health.detail = (f"{trouble}waiting for fresh data: no book newer than {s.max_book_age_s:.0f} s; "
                                    f"signals are declined as stale_book; decisions {dict(ex.desk.decisions)}")
            else:
                rt.health.detail = f"{trouble}sent {ex.orders.sent}; decisions {dict(ex.desk.decisions)}"
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
        await broker.aclose()
        await engine.dispose()


__all__ = ["CommandError", "Executor", "make_broker", "run_executor"]
