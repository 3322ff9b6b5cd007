"""The resolver's reads and writes: one resolution per market, climate reports, one score per signal.

Every write is idempotent. A resolution is inserted once and updated in place when its result or
settlement value changes (a reversal or amendment), which bumps its `revision`; a score records the
revision it was computed from, so exactly the scores of a changed market are computed again. Each
scoring batch is one transaction under a per-mode lock: a resolver killed mid-batch leaves the batch
undone, not half done, and two replicas never score the same signal twice.

Reads of `signals`, `orders` and `fills` are history, read only (their owners write them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import and_, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import ClimateReport, Fill, MarketResolution, Order, PredictionAccuracy
from libs.common.db import signals as sig_tables
from libs.common.db.upsert import insert_if_new
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR
from services.resolver.scoring import Scored, brier, log_loss

Change = Literal["new", "changed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How a market settled, as the exchange reports it."""

    ticker: str
    event_ticker: str
    series_ticker: str | None
    result: str  # yes | no | scalar | void
    status: str | None
    settlement_value: int | None  # YES payout per contract, ticks
    expiration_value: str | None
    determined_at: datetime | None
    settled_at: datetime | None
    source: str
    strike_type: str | None = None
    floor_strike: Decimal | None = None
    cap_strike: Decimal | None = None
    raw: dict[str, Any] | None = None


def implied_result(strike_type: str | None, floor: Decimal | None, cap: Decimal | None, value: Decimal) -> str | None:
    """YES/NO a market's strike implies for an underlying value (kalshi_api.md strike semantics)."""
    if strike_type == "between" and floor is not None and cap is not None:
        return "yes" if floor <= value <= cap else "no"
    if strike_type == "greater" and floor is not None:
        return "yes" if value > floor else "no"
    if strike_type == "greater_or_equal" and floor is not None:
        return "yes" if value >= floor else "no"
    if strike_type == "less" and cap is not None:
        return "yes" if value < cap else "no"
    return None


class ResolverStore:
    """One mode's resolver tables."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], mode: str, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.sessions = sessions
        self.mode = mode
        self.clock = clock

    # -- resolutions ----------------------------------------------------------------------------

    async def record(self, o: Outcome) -> tuple[Change | None, MarketResolution | None]:
        """Insert or update the market's one resolution; ("new" | "changed" | None, the row)."""
        values = {"result": o.result, "status": o.status, "settlement_value_price": o.settlement_value,
                  "expiration_value": o.expiration_value or None,
                  "expiration_numeric": _numeric(o.expiration_value), "determined_at": o.determined_at,
                  "settled_at": o.settled_at, "source": o.source, "raw": o.raw,
                  "event_ticker": o.event_ticker, "series_ticker": o.series_ticker}
        this = select(MarketResolution).where(MarketResolution.mode == self.mode, MarketResolution.ticker == o.ticker)
        async with self.sessions() as s, s.begin():
            row = await s.scalar(this.with_for_update())
            if row is None:
                new = await insert_if_new(s, MarketResolution, {"mode": self.mode, "ticker": o.ticker, **values},
                                          key=["mode", "ticker"])
                return ("new" if new else None), await s.scalar(this)
            if (row.result, row.settlement_value_price) == (o.result, o.settlement_value):
                # The same outcome seen again (a redelivery, a replay, REST after WS): fill in what was missing.
                for k in ("settled_at", "determined_at", "expiration_value", "expiration_numeric"):
                    if getattr(row, k) is None and values[k] is not None:
                        setattr(row, k, values[k])
                return None, row
            for k, v in values.items():
                setattr(row, k, v)
            row.revision += 1
            return "changed", row

    async def resolved(self, tickers: set[str]) -> set[str]:
        """Which of `tickers` already have a resolution in this mode."""
        if not tickers:
            return set()
        async with self.sessions() as s:
            return set((await s.scalars(select(MarketResolution.ticker).where(
                MarketResolution.mode == self.mode, MarketResolution.ticker.in_(tickers)))).all())

    async def attach_report(self, ticker: str, report_id: int, max_f: int) -> None:
        async with self.sessions() as s, s.begin():
            row = await s.get(MarketResolution, (self.mode, ticker))
            if row is not None:
                row.climate_report_id, row.report_max_f = report_id, max_f

    async def record_basis(self, ticker: str, event_ticker: str, close: datetime) -> Decimal | None:
        """BTC: our composite at the event's last signal before `close` vs the settlement value; the basis."""
        S = sig_tables.Signal
        async with self.sessions() as s, s.begin():
            row = await s.get(MarketResolution, (self.mode, ticker))
            if row is None or row.expiration_numeric is None:
                return None
            inputs = await s.scalar(select(S.inputs).where(
                S.mode == self.mode, S.event_ticker == event_ticker, S.family == "btc", S.created_at <= close)
                .order_by(S.created_at.desc()).limit(1))
            if not inputs or inputs.get("spot") is None:
                return None
            row.model_underlying = Decimal(int(inputs["spot"])) / ONE_DOLLAR
            row.basis = row.expiration_numeric - row.model_underlying
            return row.basis

    async def resolutions_of(self, series: str, event_ticker: str) -> list[MarketResolution]:
        async with self.sessions() as s:
            return list((await s.scalars(select(MarketResolution).where(
                MarketResolution.mode == self.mode, MarketResolution.series_ticker == series,
                MarketResolution.event_ticker == event_ticker))).all())

    # -- climate reports --------------------------------------------------------------------------

    async def store_report(self, values: dict[str, Any]) -> int | None:
        """Insert one CLI issuance (idempotent by source and product id); its id when new."""
        async with self.sessions() as s, s.begin():
            res = await s.execute(insert(ClimateReport).values(**values)
                                  .on_conflict_do_nothing(constraint="uq_climate_reports_product")
                                  .returning(ClimateReport.id))
            return res.scalar_one_or_none()

    async def known_products(self, source: str, station: str) -> set[str]:
        async with self.sessions() as s:
            return set((await s.scalars(select(ClimateReport.product_id).where(
                ClimateReport.source == source, ClimateReport.station == station))).all())

    async def official_report(self, source: str, station: str, day: date) -> ClimateReport | None:
        """The report a day's result rests on: the newest correction or final (never an intermediate)."""
        async with self.sessions() as s:
            return await s.scalar(select(ClimateReport).where(
                ClimateReport.source == source, ClimateReport.station == station, ClimateReport.climate_date == day,
                ClimateReport.kind.in_(("final", "correction")), ClimateReport.max_temp_f.is_not(None))
                .order_by(ClimateReport.issued_at.desc()).limit(1))

    # -- scoring ----------------------------------------------------------------------------------

    async def score_pending(self, *, batch: int = 500) -> list[PredictionAccuracy]:
        """Score signals of resolved markets that have no score, or one from an older revision."""
        S, R, A = sig_tables.Signal, MarketResolution, PredictionAccuracy
        async with self.sessions() as s, s.begin():
            # One scorer per mode at a time: a second replica waits, then its query (a new snapshot) sees
            # what the first committed. Row locks alone would not do: the first replica changes score
            # rows, not the signal rows it locked, so a waiting query would take them again.
            await s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                            {"k": f"kdesk:resolver:score:{self.mode}"})
            todo = (await s.execute(
                select(S, R.result, R.revision, R.settled_at, R.determined_at)
                .join(R, and_(R.mode == S.mode, R.ticker == S.ticker))
                .outerjoin(A, A.prediction_id == S.signal_id)
                .where(S.mode == self.mode, R.result.in_(("yes", "no")),
                       or_(A.prediction_id.is_(None), A.revision < R.revision))
                .order_by(S.created_at).limit(batch))).all()
            if not todo:
                return []
            traded = await self._traded(s, [t[0].signal_id for t in todo], {t[0].ticker: t[1] for t in todo})
            out = []
            for sig, result, revision, settled_at, determined_at in todo:
                outcome = 1 if result == "yes" else 0
                p_mkt = market_prob(sig)
                pnl, fees = traded.get(sig.signal_id, (None, None))
                values = {
                    "prediction_id": sig.signal_id, "mode": self.mode, "family": sig.family, "model": sig.model,
                    "series_ticker": sig.series_ticker, "event_ticker": sig.event_ticker, "ticker": sig.ticker,
                    "predicted_prob": sig.model_prob, "market_prob": p_mkt, "outcome": outcome,
                    "brier": brier(sig.model_prob, outcome),
                    "brier_market": brier(p_mkt, outcome) if p_mkt is not None else None,
                    "log_loss": log_loss(sig.model_prob, outcome), "predicted_at": sig.created_at,
                    "resolved_at": settled_at or determined_at or self.clock(), "horizon_s": None,
                    "traded": sig.signal_id in traded, "pnl_ticks": pnl, "fees_ticks": fees, "revision": revision}
                out.append(values)
            # One statement for the batch; a re-score (a newer revision) overwrites the row in place.
            stmt = insert(A).values(out)
            await s.execute(stmt.on_conflict_do_update(index_elements=[A.prediction_id], set_={
                k: stmt.excluded[k] for k in out[0] if k != "prediction_id"} | {"updated_at": self.clock()}))
            return [PredictionAccuracy(**v) for v in out]

    async def _traded(self, s: AsyncSession, signal_ids: Sequence[str],
                      result_of: dict[str, str]) -> dict[str, tuple[int, int]]:
        """(P&L, fees) of the fills of each signal's orders (signals that traded only).

        A signal's contracts are held to settlement unless an exit (an order of no signal: a stop, a take
        profit, a flatten) closed them first: exit fills close the oldest opposite contracts of the market
        (FIFO, across signals), and the pair's $1 less both legs is the closed signal's P&L, the exit's fee
        shared by the contracts it closed. What is left settles at the market's result."""
        orders = (await s.execute(select(Order.signal_id, Order.order_id, Order.ticker).where(
            Order.mode == self.mode, Order.signal_id.in_(signal_ids), Order.fill_count > 0,
            Order.order_id.is_not(None)))).all()
        if not orders:
            return {}
        tickers = sorted({o.ticker for o in orders})
        signal_of = dict((await s.execute(select(Order.order_id, Order.signal_id).where(
            Order.mode == self.mode, Order.ticker.in_(tickers), Order.order_id.is_not(None)))).all())
        fills = (await s.scalars(select(Fill).where(Fill.mode == self.mode, Fill.ticker.in_(tickers))
                                 .order_by(Fill.filled_at, Fill.id))).all()
        wanted = set(signal_ids)
        out: dict[str, tuple[int, int]] = {}

        def book(sid: str | None, pnl: int, fee: int) -> None:
            if sid is not None and sid in wanted:
                was = out.get(sid, (0, 0))
                out[sid] = (was[0] + pnl, was[1] + fee)

        lots: dict[str, list[list[Any]]] = {}  # ticker -> open lots [signal, side, count, leg price]
        for f in fills:
            leg = f.yes_price if f.outcome_side == "yes" else ONE_DOLLAR - f.yes_price
            sid = signal_of.get(f.order_id)
            open_lots = lots.setdefault(f.ticker, [])
            left = f.count
            if sid is None:  # an exit: close the oldest opposite contracts first
                for lot in open_lots:
                    if left == 0:
                        break
                    if lot[1] == f.outcome_side or lot[2] == 0:
                        continue
                    n = min(left, lot[2])
                    book(lot[0], (ONE_DOLLAR - lot[3] - leg) * n // ONE_CONTRACT - f.fee_ticks * n // f.count,
                         f.fee_ticks * n // f.count)
                    lot[2] -= n
                    left -= n
                open_lots[:] = [lot for lot in open_lots if lot[2] > 0]
            else:
                book(sid, -f.fee_ticks, f.fee_ticks)
            if left:
                open_lots.append([sid, f.outcome_side, left, leg])
        for ticker, open_lots in lots.items():
            for sid, side, n, leg in open_lots:
                payout = ONE_DOLLAR if side == result_of.get(ticker) else 0
                book(sid, (payout - leg) * n // ONE_CONTRACT, 0)
        return out

    async def station_days(self, source: str, station: str, series: str, *,
                           days: float = 90) -> list[tuple[date, float, int]]:
        """(climate day, the desk's raw forecast mean °F, official maximum °F) per resolved day of a station.

        The forecast mean is that of the day's forecast-only signals (no observation conditioned on yet),
        with the bias they applied added back: the bias is fitted on raw forecasts.
        """
        since = self.clock() - timedelta(days=days)
        S = sig_tables.Signal
        async with self.sessions() as s:
            sigs = (await s.execute(select(S.inputs).where(S.mode == self.mode, S.series_ticker == series,
                                                           S.family == "weather", S.created_at >= since))).all()
            reports = (await s.execute(select(ClimateReport.climate_date, ClimateReport.max_temp_f,
                                              ClimateReport.issued_at).where(
                ClimateReport.source == source, ClimateReport.station == station,
                ClimateReport.kind.in_(("final", "correction")), ClimateReport.max_temp_f.is_not(None))
                .order_by(ClimateReport.issued_at))).all()
        official = {r.climate_date: r.max_temp_f for r in reports}  # the newest issuance wins
        means: dict[date, list[float]] = {}
        for (inputs,) in sigs:
            if not inputs or inputs.get("station") != station or inputs.get("observed_max_f") is not None:
                continue
            if inputs.get("mean_f") is None or not inputs.get("climate_date"):
                continue
            day = date.fromisoformat(inputs["climate_date"])
            means.setdefault(day, []).append(float(inputs["mean_f"]) + float(inputs.get("bias_f") or 0.0))
        return [(d, sum(v) / len(v), official[d]) for d, v in sorted(means.items()) if d in official]

    async def scored(self, *, days: float, family: str | None = None) -> list[PredictionAccuracy]:
        since = self.clock() - timedelta(days=days)
        q = select(PredictionAccuracy).where(PredictionAccuracy.mode == self.mode,
                                             PredictionAccuracy.resolved_at >= since)
        if family:
            q = q.where(PredictionAccuracy.family == family)
        async with self.sessions() as s:
            return list((await s.scalars(q.order_by(PredictionAccuracy.resolved_at))).all())


def market_prob(sig: Any) -> float | None:
    """The market-implied P(YES) the signal saw: the mid of its book, else the price it recorded."""
    if sig.yes_bid_price is not None and sig.yes_ask_price is not None:
        return (sig.yes_bid_price + sig.yes_ask_price) / 2 / ONE_DOLLAR
    return sig.market_prob


def as_scored(a: PredictionAccuracy) -> Scored:
    return Scored(p=a.predicted_prob, outcome=a.outcome, p_market=a.market_prob, traded=bool(a.traded),
                  pnl_ticks=a.pnl_ticks, fees_ticks=a.fees_ticks)


def _numeric(v: str | None) -> Decimal | None:
    try:
        return Decimal(v) if v else None
    except ArithmeticError:
        return None


__all__ = ["Change", "Outcome", "ResolverStore", "as_scored", "implied_result", "market_prob"]
