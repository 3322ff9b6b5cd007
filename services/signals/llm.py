"""The llm family: Forecaster → Critic → Trader on an OpenAI-compatible model, under cost controls that never
lock the desk.

Its output is an ordinary model probability (`SignalPipeline.llm_p`), so edges, sizing, caps and execution
stay where they are for every family. What this module owns is when to spend money and on what:

- Filters first, in memory (no book, spread too wide, too little volume, closing too soon or too late, an
  analysis of this market already in flight here, a recent one here): every skip is counted by reason.
- Then a claim in PostgreSQL (`LlmLedger.claim`) under the mode's llm lock: the per-market cooldown and daily
  limit, and the day's budget, are judged from `llm_calls`, which every replica and every restart shares.
  Each call is reserved there, at the worst cost it can run up, before its request leaves, and settled
  with its real cost (tokens × the price table) when it returns. Two replicas cannot together spend more
  than the budget, and a replica that dies mid-call leaves its reservation counted (cautious, never loose).
- A spent budget stops analysis until the next UTC day or until an operator raises it (`kdesk llm --budget`,
  the control bucket's `llm.budget_usd`, read on every claim): one `ops.alert.llm` per day says so. Nothing
  else stops: weather and BTC keep trading, and the last llm probabilities stay valid until they age out.
- A provider that keeps answering 429 (or 5xx) after the client's own retries makes this family wait,
  doubling up to ten minutes (`pause_until`); the next success resets it.
- The Trader's answer is repaired and validated (libs/common/llm/parse.py); anything that fails is recorded
  with its reason and skipped — never a trade. A `hold` or an action against the edge's side is a skip too.

Calibration: once `llm_calibration_min` analysed markets have resolved, Platt scaling fitted on (raw
probability, outcome) maps the Trader's probability to the one signalled; the signal carries both
(`p_raw`, `p_model`). Outcomes come from settled market definitions (`md.market` with a result).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, exists, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.config import Settings, usd_to_ticks
from libs.common.db.signals import LlmCall
from libs.common.events import Alert, MarketDefinition, PublicTrade
from libs.common.families import family_of
from libs.common.llm import Estimate, Forecast, LlmClient, LlmError, LlmErrorReason, LlmResult, ParseFailure
from libs.common.llm.prices import PriceTable
from libs.common.logs import get_logger
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR
from services.signals import llm_prompts as prompts

log = get_logger(__name__)

LLM_VALID = timedelta(hours=6)  # an analysis older than this is no longer a probability to trade on
MAX_PAUSE_S = 600.0
STAGES = ("forecaster", "critic", "trader")
RECORD_CHARS = 4000  # of a prompt or an answer in a `cmd.signals.llm` answer (the table keeps them whole)


@dataclass(frozen=True, slots=True)
class Limits:
    """The family's cost controls (from Settings; the budget can be overridden at runtime)."""

    budget_ticks: int
    cooldown_s: float
    max_per_market_day: int
    min_volume: int  # 1/100 contract
    max_spread: int  # ticks
    min_hours_to_close: float
    max_hours_to_close: float
    max_completion_tokens: int
    calibration_min: int

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(budget_ticks=usd_to_ticks(s.llm_daily_budget_usd), cooldown_s=s.llm_cooldown_s,
                   max_per_market_day=s.llm_max_per_market_day, min_volume=s.llm_min_volume * ONE_CONTRACT,
                   max_spread=round(s.llm_max_spread * ONE_DOLLAR), min_hours_to_close=s.llm_min_hours_to_close,
                   max_hours_to_close=s.llm_max_hours_to_close, max_completion_tokens=s.llm_max_completion_tokens,
                   calibration_min=s.llm_calibration_min)


def utc_day(t: datetime) -> date:
    return t.astimezone(UTC).date()


class LlmLedger:
    """`llm_calls`: claims, reservations and settlements of calls, and the day's spend (one lock per mode)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: str) -> None:
        self.sessions = sessions
        self.mode = mode

    async def _lock(self, s: AsyncSession) -> None:
        await s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"kdesk:llm:{self.mode}"})

    async def _spent(self, s: AsyncSession, day: date) -> int:
        total = await s.scalar(select(func.coalesce(func.sum(func.coalesce(LlmCall.cost_ticks, LlmCall.reserved_ticks)),
                                                    0)).where(LlmCall.mode == self.mode, LlmCall.day == day))
        return int(total or 0)

    async def spent(self, day: date) -> int:
        """Ticks spent (or held by calls in flight) on `day`."""
        async with self.sessions() as s:
            return await self._spent(s, day)

    async def reserve(self, *, analysis_id: str, stage: str, ticker: str, model: str, prompt: str, reserve: int,
                      budget: int, now: datetime, cooldown_s: float, max_per_day: int) -> str | None:
        """Reserve one call; None when it may go, else why not (cooldown, market_daily_limit, budget_spent).

        The first stage of an analysis is also its claim on the market: the cooldown and the day's limit are
        checked against the other analyses of that market, under the same lock as the budget. Under the lock
        the checks and the insert are one statement (the lock is held for two round trips, not five: every
        replica's calls queue on it); only a refusal asks again, for its reason.
        """
        day = utc_day(now)
        since = now - timedelta(seconds=cooldown_s)
        mine = (LlmCall.mode == self.mode, LlmCall.ticker == ticker, LlmCall.stage == STAGES[0])
        spent = select(func.coalesce(func.sum(func.coalesce(LlmCall.cost_ticks, LlmCall.reserved_ticks)), 0)) \
            .where(LlmCall.mode == self.mode, LlmCall.day == day).scalar_subquery()
        claims = select(func.count()).where(*mine, LlmCall.day == day).scalar_subquery()
        fits = spent + reserve <= budget
        if stage == STAGES[0]:
            fits = and_(fits, claims < max_per_day, ~exists().where(*mine, LlmCall.started_at > since))
        row = {"call_id": f"{analysis_id}:{stage}", "analysis_id": analysis_id, "mode": self.mode, "day": day,
               "ticker": ticker, "stage": stage, "prompt_version": prompts.PROMPT_VERSION, "model": model,
               "status": "reserved", "prompt": prompt, "reserved_ticks": reserve, "started_at": now}
        # One statement under the lock: the row goes in only if it fits (every replica's calls queue on the lock,
        # so it is held for two round trips, not five); only a refusal asks again, for its reason.
        stmt = insert(LlmCall).from_select(list(row), select(*(literal(v, LlmCall.__table__.c[k].type)
                                                               for k, v in row.items())).where(fits))
        async with self.sessions() as s, s.begin():
            await self._lock(s)
            if (await s.execute(stmt.returning(LlmCall.call_id))).first() is not None:
                return None
            if stage == STAGES[0]:
                today = await s.scalar(select(func.count()).where(*mine, LlmCall.day == day))
                if (today or 0) >= max_per_day:
                    return "market_daily_limit"
                if await s.scalar(select(exists().where(*mine, LlmCall.started_at > since))):
                    return "cooldown"
        return "budget_spent"

    async def settle(self, call_id: str, *, now: datetime, result: LlmResult | None, parsed: dict[str, Any] | None,
                     error: str | None) -> None:
        """The call's outcome: its real cost (an answer costs what its tokens cost, used or not)."""
        values: dict[str, Any] = {"status": "failed" if error else "done", "error": error, "finished_at": now,
                                  "parsed": parsed}
        if result is not None:
            values.update(model=result.model, response=result.text if result.refusal is None else result.refusal,
                          prompt_tokens=result.prompt_tokens, completion_tokens=result.billed_output_tokens,
                          cost_ticks=result.cost_ticks, latency_ms=float(result.latency_ms), attempts=result.attempts)
        else:
            values["cost_ticks"] = 0  # no answer, nothing billed (a provider bills completed requests only)
        async with self.sessions() as s, s.begin():
            await s.execute(update(LlmCall).where(LlmCall.call_id == call_id).values(**values))

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest calls (every stage), newest first, with their prompts and answers."""
        async with self.sessions() as s:
            rows = (await s.scalars(select(LlmCall).where(LlmCall.mode == self.mode)
                                    .order_by(LlmCall.started_at.desc(), LlmCall.call_id).limit(limit))).all()
        return [{"ts": r.started_at, "ticker": r.ticker, "stage": r.stage, "model": r.model, "status": r.status,
                 "error": r.error, "cost_ticks": r.cost_ticks if r.cost_ticks is not None else r.reserved_ticks,
                 "parsed": r.parsed, "latency_ms": r.latency_ms, "prompt_tokens": r.prompt_tokens,
                 "completion_tokens": r.completion_tokens, "prompt": r.prompt[:RECORD_CHARS],
                 "response": (r.response or "")[:RECORD_CHARS]} for r in rows]

    async def day_counts(self, day: date) -> dict[str, int]:
        """Calls of `day` by status."""
        async with self.sessions() as s:
            rows = (await s.execute(select(LlmCall.status, func.count()).where(
                LlmCall.mode == self.mode, LlmCall.day == day).group_by(LlmCall.status))).all()
        return {k: int(v) for k, v in rows}

    async def forecasts(self) -> list[tuple[str, float]]:
        """(ticker, raw probability) of every trader answer used, oldest first (for calibration)."""
        async with self.sessions() as s:
            rows = (await s.execute(select(LlmCall.ticker, LlmCall.parsed).where(
                LlmCall.mode == self.mode, LlmCall.stage == "trader", LlmCall.status == "done")
                .order_by(LlmCall.started_at))).all()
        return [(t, float(p["probability"])) for t, p in rows if p and "probability" in p]


def platt_fit(p: np.ndarray, y: np.ndarray, *, iterations: int = 50, ridge: float = 1e-3) -> tuple[float, float]:
    """(a, b) of P(yes) = sigmoid(a · logit(p) + b), by Newton's method with a small ridge (Platt scaling)."""
    x = np.log(np.clip(p, 1e-4, 1 - 1e-4) / (1 - np.clip(p, 1e-4, 1 - 1e-4)))
    a, b = 1.0, 0.0
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(a * x + b)))
        w = q * (1 - q)
        g = np.array([np.sum((q - y) * x) + ridge * (a - 1), np.sum(q - y) + ridge * b])
        h = np.array([[np.sum(w * x * x) + ridge, np.sum(w * x)], [np.sum(w * x), np.sum(w) + ridge]])
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        a, b = a - step[0], b - step[1]
        if abs(step[0]) + abs(step[1]) < 1e-9:
            break
    return float(a), float(b)


@dataclass
class Calibration:
    """Platt scaling of the family's raw probabilities, fitted on its resolved forecasts."""

    a: float = 1.0
    b: float = 0.0
    n: int = 0  # resolved forecasts it was fitted on (0: identity)

    def apply(self, p: float) -> float:
        if self.n == 0:
            return p
        q = min(max(p, 1e-4), 1 - 1e-4)
        return 1 / (1 + math.exp(-(self.a * math.log(q / (1 - q)) + self.b)))


@dataclass
class Decision:
    """One analysis as the family reports it (cmd.signals.llm)."""

    ts: datetime
    ticker: str
    outcome: str  # "probability" or the reason it stopped (budget_spent, invalid_schema: action, ...)
    p_raw: float | None = None
    p_model: float | None = None
    action: str | None = None
    cost_ticks: int = 0


@dataclass
class LlmState:
    """What the pipeline reads: the latest probability per market and its inputs."""

    p: dict[str, tuple[float, float, float, str, datetime, dict[str, Any]]] = field(default_factory=dict)
    # ticker -> (p_model, p_raw, confidence, trader action, when, inputs)


class LlmAnalyst:
    """Decides which llm-family market to analyse, runs the three stages, and hands the result to the pipeline."""

    def __init__(self, settings: Settings, client: LlmClient, ledger: LlmLedger, *,
                 evaluate: Callable[[str], Awaitable[Any]], alert: Callable[[Alert], Awaitable[None]],
                 budget_override: Callable[[], Awaitable[int | None]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), concurrency: int = 2) -> None:
        self.settings = settings
        self.mode = settings.mode
        self.limits = Limits.from_settings(settings)
        self.client = client
        self.ledger = ledger
        self.evaluate = evaluate
        self.alert = alert
        self.budget_override = budget_override
        self.clock = clock
        self.state = LlmState()
        self.skipped: Counter[str] = Counter()
        self.decisions: deque[Decision] = deque(maxlen=50)
        self.calibration = Calibration()
        self.results: dict[str, bool] = {}  # ticker -> resolved YES
        self.trades: dict[str, deque[tuple[float, float]]] = {}
        self.in_flight: set[str] = set()
        self.next_try: dict[str, float] = {}  # ticker -> loop time before which this replica does not ask
        self.pause_until = 0.0  # loop time: the provider is rate limiting or failing
        self.pauses = 0
        self.budget_alerted: date | None = None
        self.sem = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls = 0

    # -- inputs ---------------------------------------------------------------------------------------------

    def on_trade(self, t: PublicTrade) -> None:
        if family_of(t.series_ticker) == "llm":
            self.trades.setdefault(t.ticker, deque(maxlen=10)).append((t.yes_price / ONE_DOLLAR,
                                                                       t.count / ONE_CONTRACT))

    async def on_market(self, m: MarketDefinition) -> None:
        """A settled llm market is an outcome to calibrate on."""
        if family_of(m.series_ticker) == "llm" and m.result in ("yes", "no") and m.ticker not in self.results:
            self.results[m.ticker] = m.result == "yes"
            await self.refit()

    async def refit(self) -> None:
        """Refit the calibration on every resolved forecast (the newest analysis per market counts)."""
        latest = dict(await self.ledger.forecasts())
        pairs = [(p, self.results[t]) for t, p in latest.items() if t in self.results]
        if len(pairs) < self.limits.calibration_min:
            return
        p = np.array([x for x, _ in pairs])
        y = np.array([1.0 if w else 0.0 for _, w in pairs])
        a, b = platt_fit(p, y)
        self.calibration = Calibration(a, b, len(pairs))
        log.info("llm_calibration_refit", n=len(pairs), a=round(a, 3), b=round(b, 3))

    # -- deciding what to analyse ---------------------------------------------------------------------------

    def screen(self, d: MarketDefinition, yes_bid: int | None, yes_ask: int | None, now: datetime) -> str | None:
        """Why this market is not worth an analysis now (None: it is); in-memory checks only."""
        if d.status != "active":
            return "market_not_active"
        if yes_bid is None or yes_ask is None:
            return "no_two_sided_book"
        if yes_ask - yes_bid > self.limits.max_spread:
            return "spread_too_wide"
        if d.volume is not None and d.volume < self.limits.min_volume:
            return "low_volume"
        if d.close_time is None:
            return "no_close_time"
        hours = (d.close_time - now).total_seconds() / 3600
        if hours < self.limits.min_hours_to_close:
            return "closes_too_soon"
        if hours > self.limits.max_hours_to_close:
            return "closes_too_late"
        loop_now = asyncio.get_running_loop().time()
        if d.ticker in self.in_flight:
            return "in_flight"
        if loop_now < self.pause_until:
            return "provider_backoff"
        if loop_now < self.next_try.get(d.ticker, 0.0):
            return "cooldown"
        return None

    def consider(self, d: MarketDefinition, yes_bid: int | None, yes_ask: int | None) -> bool:
        """Start an analysis of `d` in the background if it passes the screen; True if one started."""
        now = self.clock()
        why = self.screen(d, yes_bid, yes_ask, now)
        if why is not None:
            self.skipped[why] += 1
            return False
        self.in_flight.add(d.ticker)
        brief = prompts.MarketBrief(ticker=d.ticker, title=d.title, rules=d.rules or "", close_time=d.close_time,
                                    yes_bid=yes_bid / ONE_DOLLAR, yes_ask=yes_ask / ONE_DOLLAR,  # type: ignore[operator]
                                    recent_trades=tuple(self.trades.get(d.ticker, ())))
        task = asyncio.create_task(self._run(brief), name=f"llm:{d.ticker}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def stop(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()

    # -- one analysis ---------------------------------------------------------------------------------------

    async def budget(self) -> int:
        """Today's budget: the operator's runtime override if set, else the configured one."""
        if self.budget_override is not None:
            try:
                override = await self.budget_override()
            except Exception as e:  # the control bucket unreadable: the configured budget holds
                log.warning("llm_budget_override_unreadable", error=f"{type(e).__name__}: {e}")
                override = None
            if override is not None:
                return override
        return self.limits.budget_ticks

    def reserve_for(self, messages: list[dict[str, str]]) -> int:
        """The worst cost of one call: the prompt's tokens (estimated generously) and twice the completion cap
        (reasoning tokens can come on top of the visible answer)."""
        chars = sum(len(m["content"]) for m in messages)
        price = self.client.prices.price(self.client.model)
        worst = price.cost_ticks(chars // 3 + 50, 2 * self.limits.max_completion_tokens)
        if self.client.fallback_model is not None:
            fb = self.client.prices.price(self.client.fallback_model)
            worst = max(worst, fb.cost_ticks(chars // 3 + 50, 2 * self.limits.max_completion_tokens))
        return max(int(worst), 1)

    async def _run(self, brief: prompts.MarketBrief) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self.sem:
                decision = await self.analyse(brief)
            self.decisions.append(decision)
            if decision.outcome in ("cooldown", "market_daily_limit"):
                # Another replica (or an earlier run of this one) analysed it: come back after the cooldown.
                self.next_try[brief.ticker] = loop.time() + max(self.limits.cooldown_s / 4, 30.0)
            elif decision.outcome == "budget_spent":
                self.next_try[brief.ticker] = loop.time() + 60.0
            else:
                self.next_try[brief.ticker] = loop.time() + self.limits.cooldown_s
            if decision.outcome == "probability":
                await self.evaluate(brief.ticker)
        except Exception:
            log.exception("llm_analysis_crashed", ticker=brief.ticker)
            self.next_try[brief.ticker] = loop.time() + 60.0
        finally:
            self.in_flight.discard(brief.ticker)

    async def analyse(self, brief: prompts.MarketBrief) -> Decision:
        """Forecaster, Critic, Trader; each call reserved, made, recorded. Returns what came of it."""
        now = self.clock()
        analysis_id = f"llm:{brief.ticker}:{now:%Y%m%dT%H%M%S}:{uuid.uuid4().hex[:8]}"
        spent = 0
        forecast: dict[str, Any] = {}
        critique: dict[str, Any] = {}
        answer: Forecast | None = None
        for stage in STAGES:
            messages = (prompts.forecaster(brief, now) if stage == "forecaster"
                        else prompts.critic(brief, now, forecast) if stage == "critic"
                        else prompts.trader(brief, now, forecast, critique))
            schema = Forecast if stage == "trader" else Estimate
            call_id = f"{analysis_id}:{stage}"
            why = await self.ledger.reserve(
                analysis_id=analysis_id, stage=stage, ticker=brief.ticker, model=self.client.model,
                prompt="\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages),
                reserve=self.reserve_for(messages), budget=await self.budget(), now=self.clock(),
                cooldown_s=self.limits.cooldown_s, max_per_day=self.limits.max_per_market_day)
            if why is not None:
                self.skipped[why] += 1
                if why == "budget_spent":
                    await self._budget_spent()
                return Decision(now, brief.ticker, why, cost_ticks=spent)
            self.calls += 1
            try:
                result = await self.client.complete(messages, schema=schema,
                                                    max_completion_tokens=self.limits.max_completion_tokens)
            except LlmError as e:
                await self.ledger.settle(call_id, now=self.clock(), result=None, parsed=None, error=e.reason.value)
                self.skipped[f"llm_{e.reason.value}"] += 1
                if e.reason in (LlmErrorReason.RATE_LIMITED, LlmErrorReason.SERVER_ERROR, LlmErrorReason.TIMEOUT,
                                LlmErrorReason.CONNECTION):
                    self._pause(e.reason.value)
                log.warning("llm_call_failed", ticker=brief.ticker, stage=stage, reason=e.reason.value,
                            attempts=e.attempts)
                return Decision(now, brief.ticker, e.reason.value, cost_ticks=spent)
            self.pauses = 0
            spent += result.cost_ticks
            parsed = result.parse(schema)
            if isinstance(parsed, ParseFailure) and schema is Estimate:
                # A forecaster or critic that answered in the Trader's richer shape still gave its estimate.
                richer = result.parse(Forecast)
                if not isinstance(richer, ParseFailure):
                    parsed = Estimate(probability=richer.probability, reasoning=richer.reasoning)
            if isinstance(parsed, ParseFailure):
                await self.ledger.settle(call_id, now=self.clock(), result=result, parsed=None, error=parsed.reason)
                self.skipped[parsed.reason.split(":")[0]] += 1
                log.info("llm_answer_unusable", ticker=brief.ticker, stage=stage, reason=parsed.reason)
                return Decision(now, brief.ticker, parsed.reason, cost_ticks=spent)
            await self.ledger.settle(call_id, now=self.clock(), result=result, parsed=parsed.model_dump(), error=None)
            if stage == "forecaster":
                forecast = parsed.model_dump()
            elif stage == "critic":
                critique = parsed.model_dump()
            else:
                answer = parsed  # type: ignore[assignment]
        assert answer is not None
        p_raw = answer.probability
        p = self.calibration.apply(p_raw)
        self.state.p[brief.ticker] = (p, p_raw, answer.confidence, answer.action, self.clock(),
                                      {"analysis_id": analysis_id, "calibration_n": self.calibration.n,
                                       "forecaster": forecast.get("probability"),
                                       "critic": critique.get("probability")})
        log.info("llm_forecast", ticker=brief.ticker, p_raw=round(p_raw, 3), p=round(p, 3), action=answer.action,
                 cost_usd=round(spent / ONE_DOLLAR, 4))
        return Decision(now, brief.ticker, "probability", p_raw=p_raw, p_model=p, action=answer.action,
                        cost_ticks=spent)

    def _pause(self, why: str) -> None:
        self.pauses += 1
        delay = min(MAX_PAUSE_S, 15.0 * 2 ** (self.pauses - 1))
        self.pause_until = asyncio.get_running_loop().time() + delay
        log.warning("llm_provider_backoff", reason=why, pause_s=delay, in_a_row=self.pauses)

    async def _budget_spent(self) -> None:
        today = utc_day(self.clock())
        if self.budget_alerted == today:
            return
        self.budget_alerted = today
        budget = await self.budget()
        spent = await self.ledger.spent(today)
        # One alert per mode and day whichever replica sends it: the id is the fact (JetStream dedupes it).
        await self.alert(Alert(
            id=f"alert:llm_budget:{self.mode.value}:{today.isoformat()}", ts_event=self.clock(), mode=self.mode,
            family="llm", severity="warning", dedupe_key=f"llm_budget:{today.isoformat()}",
            title=f"LLM budget spent for {today:%b %d}: analysis stopped until 00:00 UTC",
            detail=f"spent ${spent / ONE_DOLLAR:.2f} of ${budget / ONE_DOLLAR:.2f}; weather and BTC trade on. "
                   "Raise it with `kdesk llm --budget <dollars>` or /llm budget <dollars>.",
            data={"spent_ticks": spent, "budget_ticks": budget, "day": today.isoformat()}))

    # -- the pipeline's view --------------------------------------------------------------------------------

    def probability(self, ticker: str, now: datetime) -> tuple[float, float, float, str, datetime,
                                                                 dict[str, Any]] | None:
        got = self.state.p.get(ticker)
        if got is None or now - got[4] > LLM_VALID:
            return None
        return got

    async def report(self, limit: int = 10) -> dict[str, Any]:
        """`cmd.signals.llm`: the day's spend and budget, the provider's state, the last decisions."""
        today = utc_day(self.clock())
        budget = await self.budget()
        spent = await self.ledger.spent(today)
        loop_now = asyncio.get_running_loop().time()
        return {
            "mode": self.mode.value, "day": today.isoformat(), "model": self.client.model,
            "fallback_model": self.client.fallback_model, "budget_ticks": budget, "spent_ticks": spent,
            "remaining_ticks": max(budget - spent, 0), "budget_spent": spent >= budget,
            "calls_today": await self.ledger.day_counts(today),
            "provider_backoff_s": round(max(self.pause_until - loop_now, 0.0), 1),
            "calibration": {"n": self.calibration.n, "a": round(self.calibration.a, 4),
                            "b": round(self.calibration.b, 4)},
            "skipped": dict(self.skipped.most_common(12)),
            "decisions": [{"ts": d.ts.isoformat(), "ticker": d.ticker, "outcome": d.outcome, "p_raw": d.p_raw,
                           "p_model": d.p_model, "action": d.action, "cost_ticks": d.cost_ticks}
                          for d in list(self.decisions)[-limit:][::-1]],
            "recent_calls": [{**r, "ts": r["ts"].isoformat()} for r in await self.ledger.recent(limit)],
        }


def make_client(settings: Settings) -> LlmClient | None:
    """The provider client, or None (logged) when the family cannot run: no key outside sim."""
    base_url, key = settings.llm_endpoint()
    if not key:
        log.warning("llm_family_off", reason="no KDESK_LLM_API_KEY (or _FILE) configured")
        return None
    return LlmClient(key, base_url=base_url, model=settings.llm_model, fallback_model=settings.llm_fallback_model,
                     structured_output=settings.llm_structured_output, timeout_s=settings.llm_timeout_s,
                     max_completion_tokens=settings.llm_max_completion_tokens,
                     prices=PriceTable.from_config(settings.llm_prices))
