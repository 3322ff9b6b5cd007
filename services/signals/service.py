"""The signals service wiring: md.* in (replayed last-per-subject at start, then live), sig.* out, rows stored."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import subjects
from libs.common.bus import Bus, CommandError
from libs.common.control import read_llm_budget
from libs.common.db import create_engine, session_factory
from libs.common.db import signals as tables
from libs.common.db.upsert import insert_if_new, insert_many_if_new
from libs.common.events import (
    Alert,
    BookUpdate,
    MarketDefinition,
    ModelParamUpdate,
    PublicTrade,
    Signal,
    SpotTick,
    WxForecast,
    WxObservation,
    utcnow,
)
from libs.common.jobs import Jobs
from libs.common.logs import get_logger
from libs.common.runtime import ServiceRuntime
from libs.common.strategies import parse_series
from services.signals.forecast import serve_forecast
from services.signals.pipeline import EdgeDecayMonitor, SignalPipeline, input_limits

log = get_logger(__name__)


class SignalStore:
    """Writes emitted signals and weather ladders (idempotent by id)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def signal(self, s: Signal, pipeline: SignalPipeline) -> None:
        """Store one signal with its inputs."""
        await self.signals([self.row(s, pipeline)])

    async def signals(self, rows: list[dict[str, Any]]) -> None:
        """Store signal rows (idempotent by id), in one transaction."""
        if rows:
            async with self.sessions() as session, session.begin():
                await insert_many_if_new(session, tables.Signal, rows, key=["signal_id"])

    @staticmethod
    def row(s: Signal, pipeline: SignalPipeline) -> dict[str, Any]:
        """A signal's row, with the book and inputs it was computed on (taken now, while they are current)."""
        st = pipeline.view.get(s.ticker)
        top = st.top() if st else None
        book_seq = st.book.seq if st and st.book else None
        return {
            "signal_id": s.id, "mode": s.mode.value, "family": s.family, "series_ticker": s.series_ticker,
            "event_ticker": s.event_ticker, "ticker": s.ticker, "model": f"{s.model}:{s.model_version}",
            "model_prob": s.p_model, "market_prob": s.p_market, "confidence": s.confidence, "action": s.action,
            "price": s.limit_price, "edge_maker_ticks": s.edge_maker, "edge_taker_ticks": s.edge_taker,
            "yes_bid_price": top.best_yes_bid if top else None, "yes_ask_price": top.yes_ask if top else None,
            "book_seq": book_seq, "decision": "trade", "reason": None,
            "inputs": {"ref": s.inputs_ref, **(pipeline.weather_p[s.ticker].inputs
                                               if s.ticker in pipeline.weather_p else {})},
            "ts_event": s.ts_event}

    async def recent(self, mode: str, limit: int) -> list[dict[str, Any]]:
        """The newest signals of a mode, newest first."""
        async with self.sessions() as session:
            rows = (await session.scalars(select(tables.Signal).where(tables.Signal.mode == mode)
                                          .order_by(tables.Signal.created_at.desc()).limit(limit))).all()
        return [{"signal_id": r.signal_id, "ts": r.created_at, "family": r.family, "ticker": r.ticker,
                 "action": r.action, "model_prob": r.model_prob, "market_prob": r.market_prob,
                 "edge_maker_ticks": r.edge_maker_ticks, "reason": r.reason} for r in rows]

    async def param(self, p: ModelParamUpdate) -> None:
        """Keep a fitted parameter the resolver published (model_params is ours; the resolver only publishes)."""
        async with self.sessions() as session, session.begin():
            await insert_if_new(session, tables.ModelParam, {
                "family": p.family, "name": p.name, "scope": p.scope, "value": p.value, "params": p.params,
                "n_samples": p.n_samples, "valid_from": p.ts_event, "fitted_at": p.ts_event},
                key=["family", "name", "scope", "valid_from"])

    async def ladders(self, pipeline: SignalPipeline) -> None:
        """Store the weather bracket probabilities computed since the last call."""
        pending, pipeline.ladders = pipeline.ladders, []
        rows = []
        for event, defs, mp, probs in pending:
            for d in defs:
                rows.append({"run_id": mp.inputs["run_id"], "model": "blend", "event_ticker": event, "ticker": d.ticker,
                             "station": mp.inputs["station"], "climate_date": mp.inputs["climate_date"],
                             "strike_type": d.strike_type, "floor_strike": d.floor_strike, "cap_strike": d.cap_strike,
                             "prob": probs[d.ticker], "member_count": mp.inputs["members"],
                             "obs_max_f": mp.inputs["observed_max_f"], "computed_at": mp.ts})
        if rows:
            from datetime import date

            for r in rows:
                r["climate_date"] = date.fromisoformat(r["climate_date"])
            async with self.sessions() as session, session.begin():
                await insert_many_if_new(session, tables.WeatherBracketProb, rows, key=["run_id", "model", "ticker"])


class SignalWriter:
    """Stores signal rows beside the hot path, not in it.

    Waiting for a PostgreSQL transaction per signal inside the book handler held every later book behind it:
    at 2,000 markets the lag from a book to its signal reached seconds (benchmarks/scale.py). The handler now
    publishes the signal (the durable copy, on JetStream), queues its row and goes on; this writer stores what
    queued every `interval_s` in one transaction, and the rest when the service stops. A failed write keeps the
    rows and tries again at the next tick; past `max_pending` the oldest are dropped, counted and logged. A
    process killed outright loses at most the rows of the last interval (the signals themselves are on the bus).
    """

    def __init__(self, store: SignalStore, *, interval_s: float = 0.05, max_pending: int = 50_000) -> None:
        self.store = store
        self.interval_s = interval_s
        self.pending: deque[dict[str, Any]] = deque()
        self.max_pending = max_pending
        self.written = 0
        self.dropped = 0
        self.failing = 0

    def put(self, row: dict[str, Any]) -> None:
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.error("signal_rows_dropped", dropped=self.dropped, pending=len(self.pending))
        self.pending.append(row)

    async def flush(self) -> None:
        rows = list(self.pending)
        if not rows:
            return
        try:
            await self.store.signals(rows)
        except Exception as e:  # the database is down or restarting: keep them, try again
            self.failing += 1
            if self.failing in (1, 10) or self.failing % 100 == 0:
                log.warning("signal_rows_not_stored", pending=len(rows), in_a_row=self.failing,
                            error=f"{type(e).__name__}: {e}")
            return
        for _ in rows:
            self.pending.popleft()
        self.written += len(rows)
        self.failing = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
            await self.flush()
        await self.flush()


async def check_edge_decay(bus: Bus, monitor: EdgeDecayMonitor) -> int:
    """Alert on held positions whose edge turned; the number of new alerts.

    Positions belong to the executor: ask it (`cmd.executor.positions`, this mode's instance) rather
    than read its table. With no executor running there is nothing held to watch.
    """
    try:
        held = await bus.request("executor", "positions", timeout=5.0)
    except CommandError as e:
        log.info("edge_decay_skipped", reason=e.code, detail=str(e))
        return 0
    alerts = monitor.check({p["ticker"]: int(p["position"]) for p in held})
    for a in alerts:
        await bus.publish_js(subjects.ops_alert("edge_decay"), Alert(
            ts_event=utcnow(), mode=bus.mode, family="edge_decay", severity="warning",
            dedupe_key=a["dedupe_key"], title=f"edge turned against our {a['side'].upper()} in "
            f"{a['ticker']}: exit {a['exit_value']:.2f} vs model {a['model_value']:.2f}", data=a))
    return len(alerts)


async def attach(bus: Bus, pipeline: SignalPipeline, store: SignalStore | None) -> None:
    """Subscribe the pipeline to the bus: history of last values first (ordered consumers), then live."""
    # Ladder rows are written beside the handlers, not in them: awaiting the insert in the book handler held
    # every later book behind a PostgreSQL transaction (at 2,000 markets, p99 book-to-signal lag 275 ms with
    # it, 69 ms without; benchmarks/scale.py). One writer at a time; what queues meanwhile goes in its next turn.
    writing: list[asyncio.Task[None]] = []

    async def write_ladders() -> None:
        assert store is not None
        while pipeline.ladders:
            try:
                await store.ladders(pipeline)
            except Exception:  # the rows of that batch are lost (the signals are on the bus); say so
                log.exception("ladder_store_failed")
                return

    def then_store(fn: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[None]]:
        async def run(ev: Any) -> None:
            await fn(ev)
            if store is not None and pipeline.ladders and not (writing and not writing[-1].done()):
                writing[:] = [asyncio.create_task(write_ladders(), name="ladder_store")]
        return run

    # Ordered consumers replay the last definition/run per subject, then follow live messages.
    for subject, model, fn in (("md.market.>", MarketDefinition, pipeline.on_market),
                               ("md.wx.forecast.>", WxForecast, pipeline.on_forecast),
                               ("md.wx.obs.>", WxObservation, pipeline.on_obs)):
        await bus.follow(subject, model, then_store(fn), replay_last=True)
    # Books, the hot path, as the executor takes them: live on core NATS first, then the last one per market
    # once from JetStream (nothing published in between is missed; the view ignores a replayed book older than
    # a live one). Followed through an ordered JetStream consumer, every book also waited for the stream's
    # store and the push consumer's delivery.
    await bus.follow("md.book.>", BookUpdate, then_store(pipeline.on_book), replay_last=False)
    replayed = await bus.replay_last("md.book.>", BookUpdate, then_store(pipeline.on_book))
    log.info("books_replayed", books=replayed)
    await bus.follow("md.spot.>", SpotTick, then_store(pipeline.on_spot), replay_last=False)

    async def on_param(p: ModelParamUpdate) -> None:
        await pipeline.on_param(p)
        if store is not None:
            await store.param(p)

    # The last fitted value per parameter, then each new fit (station biases from the resolver).
    await bus.follow("res.param.>", ModelParamUpdate, then_store(on_param), replay_last=True)


async def serve_recent(bus: Bus, store: SignalStore | None, emitted: deque[Signal]) -> None:
    """Answer `cmd.signals.recent {limit}`: the newest signals, newest first (data; the views render it).
    From PostgreSQL when there is one (every replica's signals), else from this replica's memory."""
    async def recent(req: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            limit = int(req.get("limit", 20))
        except (TypeError, ValueError):
            raise CommandError("bad_request", "limit must be a whole number") from None
        if not 1 <= limit <= 500:
            raise CommandError("bad_request", "limit must be between 1 and 500")
        if store is not None:
            return await store.recent(bus.mode.value, limit)
        return [{"signal_id": x.id, "ts": x.ts_event, "family": x.family, "ticker": x.ticker, "action": x.action,
                 "model_prob": x.p_model, "market_prob": x.p_market, "edge_maker_ticks": x.edge_maker,
                 "reason": None} for x in reversed(list(emitted)[-limit:])]

    await bus.serve("signals", "recent", recent)


async def run_signals(rt: ServiceRuntime) -> None:
    """Wire and run until stopped."""
    s = rt.settings
    db_url = s.database_url_value()
    engine = create_engine(db_url) if db_url else None
    store = SignalStore(session_factory(engine)) if engine else None

    emitted: deque[Signal] = deque(maxlen=500)  # answers `recent` when there is no database
    writer = SignalWriter(store) if store is not None else None

    async def emit(sig: Signal) -> None:
        emitted.append(sig)
        await rt.bus.publish_js(subjects.sig(sig.family, sig.series_ticker, sig.ticker), sig)
        if writer is not None:
            writer.put(SignalStore.row(sig, pipeline))
        log.info("signal", ticker=sig.ticker, action=sig.action, p_model=round(sig.p_model, 3),
                 p_market=round(sig.p_market, 3), edge_maker=sig.edge_maker, edge_taker=sig.edge_taker)

    pipeline = SignalPipeline(emit, mode=s.mode, risk=s.risk, freshness=s.freshness,
                              fair_value_series=parse_series(s.mm_series))
    analyst = await start_llm(rt, pipeline, engine)
    await attach(rt.bus, pipeline, store)

    await serve_recent(rt.bus, store, emitted)
    await serve_forecast(rt.bus, pipeline)
    for name, limit in input_limits(s.freshness).items():
        rt.freshness.expect(name, limit)

    async def report() -> None:
        while not rt.stopping.is_set():
            ages = pipeline.input_ages()
            for name, age in ages.items():
                if age is not None:
                    rt.freshness.mark(name, age_s=age)
            stale = [k for k, v in rt.freshness.snapshot().items() if v.stale]
            waiting = f"waiting for fresh data: {', '.join(stale)}; " if stale else ""
            rt.health.detail = (f"{waiting}signals {pipeline.emitted}; "
                                f"suppressed {dict(pipeline.suppressed.most_common(5))}")
            await asyncio.sleep(min(5.0, s.health_interval_s))

    monitor = EdgeDecayMonitor(pipeline)
    jobs = Jobs()
    jobs.add("edge_decay", 30, lambda: check_edge_decay(rt.bus, monitor))

    tasks = [asyncio.create_task(report()), *jobs.start(rt.stopping)]
    storing = asyncio.create_task(writer.run(rt.stopping)) if writer is not None else None
    await rt.stopping.wait()
    for task in tasks:
        task.cancel()
    if storing is not None:
        await storing  # the last rows queued are written before the engine goes
    if analyst is not None:
        await analyst.stop()
    if engine is not None:
        await engine.dispose()


async def start_llm(rt: ServiceRuntime, pipeline: SignalPipeline, engine: Any) -> Any:
    """The llm family when KDESK_LLM_SERIES names series: its analyst on the pipeline, its trades and outcomes
    followed, `cmd.signals.llm` answered. It needs PostgreSQL (the budget lives there) and a provider key."""
    s = rt.settings
    if not s.llm_series_list():
        return None
    if engine is None:
        log.warning("llm_family_off", reason="no database: the llm budget is kept in PostgreSQL")
        return None
    from services.signals.llm import LlmAnalyst, LlmLedger, make_client

    client = make_client(s)
    if client is None:
        return None
    kv = await rt.bus.control()

    async def budget_override() -> int | None:
        return await read_llm_budget(kv)

    async def alert(a: Alert) -> None:
        await rt.bus.publish_js(subjects.ops_alert("llm"), a)

    analyst = LlmAnalyst(s, client, LlmLedger(session_factory(engine), s.mode.value),
                         evaluate=pipeline.evaluate, alert=alert, budget_override=budget_override)
    pipeline.llm = analyst
    await rt.bus.follow("md.trade.>", PublicTrade, _sync(analyst.on_trade), replay_last=False)

    async def report(req: dict[str, Any]) -> dict[str, Any]:
        try:
            limit = int(req.get("limit", 10))
        except (TypeError, ValueError):
            raise CommandError("bad_request", "limit must be a whole number") from None
        return await analyst.report(min(max(limit, 1), 100))

    await rt.bus.serve("signals", "llm", report)
    log.info("llm_family_on", series=s.llm_series_list(), model=client.model, base_url=client.base_url)
    return analyst


def _sync(fn: Callable[[Any], None]) -> Callable[[Any], Awaitable[None]]:
    async def run(ev: Any) -> None:
        fn(ev)
    return run
