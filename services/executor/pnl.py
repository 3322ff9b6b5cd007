"""The desk's P&L as data: the equity curve, P&L per UTC day, realized / unrealized / fees, by family.

What each number counts (all integer $0.0001 ticks):
- equity = `balance_ticks + portfolio_value_ticks` of a `balance_snapshots` row, the executor's own
  definition (`Desk.check_daily_loss`): cash + collateral held by resting orders + open positions at
  their best bid. It moves with deposits and withdrawals too, so a day's equity change is P&L only
  when no money came in or went out that day.
- a day's `pnl_ticks` = its end equity − its start equity: from the day's first snapshot to the next
  UTC day's first snapshot (so consecutive days chain), or to the day's own last snapshot when the next
  day has none (today, or a day the desk stopped). A day without snapshots has `null` equity and P&L.
- `today_pnl_ticks` = the last snapshot − the first snapshot of today (UTC): the daily-loss rule's view,
  as of the last snapshot (one every KDESK_BALANCE_EVERY_S per replica).
- `realized_ticks` is the sum of `positions.realized_pnl_ticks`: closed contracts and settlements, net
  of fees (the ledger subtracts every fill's fee from its position's realized P&L). `fees_ticks` is the
  sum of fees paid, shown on its own but already inside realized.
- a day's `realized_ticks` attributes that total to days: each fill's change to its position's realized
  P&L (the ledger's arithmetic replayed over the ticker's fills in the order they were recorded), and a
  settlement's payout less the remaining cost on the day it settled. What reconciliation wrote into a
  position without a fill (adopted positions, repairs) has no day, so the days may not sum to the total.
- `unrealized_ticks` = open positions at their mark (the best bid of the held leg; cost basis, i.e. 0,
  when there is no book) minus their cost basis — the same mark as `cmd.executor.positions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from math import ceil
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, extract, func, literal_column, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import BalanceSnapshot, Fill, Position
from libs.common.money import ONE_CONTRACT
from services.executor.ledger import FillFact, apply_to_position
from services.executor.markets import Markets

DEFAULT_DAYS = 7
MAX_DAYS = 365
MAX_POINTS = 200  # of the equity curve: enough for a chart or a sparkline, small on the bus
UNKNOWN_FAMILY = "unknown"  # positions the ledger could not assign to a family (adopted by reconciliation)
DAY_S = 86_400

Snapshot = tuple[datetime, int]  # (ts, equity ticks)
Mark = Callable[[str, int], int | None]  # (ticker, signed position) -> best bid of the held leg, or None
T = TypeVar("T")


class PositionLike(Protocol):
    """The columns of a `positions` row that P&L reads."""

    ticker: str
    family: str | None
    position: int
    cost_ticks: int
    realized_pnl_ticks: int
    fees_paid_ticks: int
    settled_at: datetime | None


# -- pure parts ---------------------------------------------------------------------------------

def equity_of(balance_ticks: int, portfolio_value_ticks: int | None) -> int:
    """Equity of one balance snapshot (a snapshot without a portfolio value counts cash only)."""
    return balance_ticks + (portfolio_value_ticks or 0)


def window(now: datetime, days: int) -> list[date]:
    """The last `days` UTC dates, oldest first, today (of `now`) last."""
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def day_start(d: date) -> datetime:
    """Midnight UTC of `d`."""
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def downsample(points: Sequence[T], max_points: int = MAX_POINTS) -> list[T]:
    """At most `max_points` of `points`, evenly spaced by index, in order; the first and last are kept."""
    n = len(points)
    if n <= max_points:
        return list(points)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 to keep the first and last point, got {max_points}")
    # i * (n-1) // (max-1) runs from 0 to n-1 and, with n > max, never repeats an index.
    return [points[i * (n - 1) // (max_points - 1)] for i in range(max_points)]


def day_equity(snapshots: Iterable[Snapshot], dates: Sequence[date]) -> dict[date, tuple[int | None, int | None]]:
    """(start, end) equity of each date: its first snapshot, and the next date's first snapshot or else
    its own last one; (None, None) for a date without snapshots."""
    firsts: dict[date, int] = {}
    lasts: dict[date, int] = {}
    for ts, eq in sorted(snapshots, key=lambda s: s[0]):
        d = ts.astimezone(UTC).date()
        firsts.setdefault(d, eq)
        lasts[d] = eq
    out: dict[date, tuple[int | None, int | None]] = {}
    for d in dates:
        start = firsts.get(d)
        if start is None:
            out[d] = (None, None)
            continue
        nxt = firsts.get(d + timedelta(days=1))
        out[d] = (start, nxt if nxt is not None else lasts[d])
    return out


def unrealized(position: int, cost_ticks: int, bid: int | None) -> int:
    """An open position at the best bid of its leg minus its cost basis; 0 without a bid (marked at cost)."""
    if position == 0 or bid is None:
        return 0
    return abs(position) * bid // ONE_CONTRACT - cost_ticks


def realized_events(fills: Iterable[FillFact], positions: Iterable[PositionLike]) -> list[tuple[datetime, int]]:
    """When realized P&L happened: (ts, ticks) for each fill and each settlement.

    `fills` are replayed per ticker through the ledger's `apply_to_position`, in the order given (the order
    the ledger applied them), each fill less its fee; a settled position adds what its realized total has
    beyond the replay, on its `settled_at`. `fills` must hold every fill of each settled ticker.
    """
    state: dict[str, tuple[int, int, int]] = {}
    out: list[tuple[datetime, int]] = []
    for f in fills:
        pos, basis, before = state.get(f.ticker, (0, 0, 0))
        pos, basis, after = apply_to_position(pos, basis, before, f)
        after -= f.fee
        state[f.ticker] = (pos, basis, after)
        out.append((f.filled_at, after - before))
    for p in positions:
        if p.settled_at is not None:
            out.append((p.settled_at, p.realized_pnl_ticks - state.get(p.ticker, (0, 0, 0))[2]))
    return out


def by_family(positions: Iterable[PositionLike], mark: Mark) -> dict[str, dict[str, int]]:
    """Realized, unrealized (at `mark`), fees and open positions per family."""
    out: dict[str, dict[str, int]] = {}
    for p in positions:
        row = out.setdefault(p.family or UNKNOWN_FAMILY,
                             {"realized_ticks": 0, "unrealized_ticks": 0, "fees_ticks": 0, "positions": 0})
        row["realized_ticks"] += p.realized_pnl_ticks
        row["fees_ticks"] += p.fees_paid_ticks
        if p.position != 0:
            row["positions"] += 1
            row["unrealized_ticks"] += unrealized(p.position, p.cost_ticks, mark(p.ticker, p.position))
    return dict(sorted(out.items()))


def summarize(*, now: datetime, dates: Sequence[date], curve: Sequence[Snapshot], boundaries: Iterable[Snapshot],
              fills: Sequence[FillFact], positions: Sequence[PositionLike], mark: Mark,
              max_points: int = MAX_POINTS) -> dict[str, Any]:
    """The `cmd.executor.pnl` answer from the rows (see the module docstring for what each number counts).

    `curve`: snapshots of the window in time order, ending with the newest one; `boundaries`: at least the
    first and last snapshot of each date (more do no harm); `fills`: every fill of each ticker that has a
    fill or a settlement in the window, in the order recorded; `positions`: all of the mode's positions.
    """
    in_window_days = set(dates)
    events: dict[date, int] = {}
    for ts, ticks in realized_events(fills, positions):
        d = ts.astimezone(UTC).date()
        if d in in_window_days:
            events[d] = events.get(d, 0) + ticks
    fees: dict[date, int] = {}
    count: dict[date, int] = {}
    for f in fills:
        d = f.filled_at.astimezone(UTC).date()
        if d in in_window_days:
            fees[d] = fees.get(d, 0) + f.fee
            count[d] = count.get(d, 0) + 1
    equity = day_equity(boundaries, dates)
    days = []
    for d in dates:
        start, end = equity[d]
        days.append({"date": d.isoformat(), "start_equity_ticks": start, "end_equity_ticks": end,
                     "pnl_ticks": None if start is None or end is None else end - start,
                     "realized_ticks": events.get(d, 0), "fees_ticks": fees.get(d, 0), "fills": count.get(d, 0)})
    today = dates[-1]
    today_start = equity[today][0]
    last = curve[-1] if curve else None
    families = by_family(positions, mark)
    return {
        "window_days": len(dates), "since": day_start(dates[0]).isoformat(), "now": _iso(now),
        "as_of": _iso(last[0]) if last else None,
        "equity": [{"ts": _iso(ts), "equity_ticks": eq} for ts, eq in downsample(curve, max_points)],
        "days": days,
        "today_pnl_ticks": None if today_start is None or last is None else last[1] - today_start,
        "realized_ticks": sum(p.realized_pnl_ticks for p in positions),
        "unrealized_ticks": sum(f["unrealized_ticks"] for f in families.values()),
        "fees_ticks": sum(p.fees_paid_ticks for p in positions),
        "by_family": families,
    }


def _iso(ts: datetime) -> str:
    # In UTC whatever the database session's time zone: "2026-09-10T15:00:00+00:00".
    return ts.astimezone(UTC).isoformat()


def book_mark(markets: Markets) -> Mark:
    """The mark `cmd.executor.positions` uses: the best bid of the held leg in the executor's books."""

    def mark(ticker: str, position: int) -> int | None:
        st = markets.get(ticker)
        return st.bid("yes" if position > 0 else "no") if st is not None else None

    return mark


def fill_fact(f: Fill) -> FillFact:
    """A stored fill as the ledger applied it."""
    return FillFact(trade_id=f.trade_id or "", order_id=f.order_id, ticker=f.ticker, book_side=f.book_side,
                    outcome_side=f.outcome_side, yes_price=f.yes_price, count=f.count, fee=f.fee_ticks,
                    is_taker=f.is_taker, filled_at=f.filled_at, client_order_id=f.client_order_id)


# -- queries ------------------------------------------------------------------------------------

SNAP = BalanceSnapshot


def _snap(row: Any) -> Snapshot:
    return row.ts, equity_of(row.balance_ticks, row.portfolio_value_ticks)


def _snapshots(mode: str, since: datetime, now: datetime) -> Select[Any]:
    """The mode's snapshots from `since` to `now` (ts, balance, portfolio value)."""
    return select(SNAP.ts, SNAP.balance_ticks, SNAP.portfolio_value_ticks).where(
        SNAP.mode == mode, SNAP.ts >= since, SNAP.ts <= now)


async def _curve(s: AsyncSession, mode: str, since: datetime, now: datetime, max_points: int) -> list[Snapshot]:
    """The first snapshot of each of `max_points - 1` equal slices of the window, and the newest snapshot:
    a snapshot every 30 s per replica is ~1M rows a year, so the database thins them out."""
    width = max(1, ceil((now - since).total_seconds() / max(max_points - 1, 1)))
    # Inlined integers, not parameters: PostgreSQL matches DISTINCT ON and ORDER BY by their text.
    bucket = func.floor((extract("epoch", SNAP.ts) - literal_column(str(int(since.timestamp()))))
                        / literal_column(str(width)))
    q = _snapshots(mode, since, now)
    firsts = (await s.execute(q.ext(distinct_on(bucket)).order_by(bucket, SNAP.ts))).all()
    newest = (await s.execute(q.order_by(SNAP.ts.desc()).limit(1))).first()
    points = [_snap(r) for r in firsts]
    if newest is not None and (not points or points[-1][0] != newest.ts):
        points.append(_snap(newest))
    return points


async def _boundaries(s: AsyncSession, mode: str, since: datetime, now: datetime) -> list[Snapshot]:
    """The first and the last snapshot of each UTC day of the window."""
    # Unix time has no leap seconds, so whole multiples of 86 400 s are the UTC midnights.
    day = func.floor(extract("epoch", SNAP.ts) / literal_column(str(DAY_S)))
    q = _snapshots(mode, since, now).ext(distinct_on(day))
    firsts = (await s.execute(q.order_by(day, SNAP.ts))).all()
    lasts = (await s.execute(q.order_by(day, SNAP.ts.desc()))).all()
    return [_snap(r) for r in (*firsts, *lasts)]


async def _fills(s: AsyncSession, mode: str, since: datetime, now: datetime) -> list[FillFact]:
    """Every fill of each ticker with a fill or a settlement in the window, in the order recorded."""
    touched = select(Fill.ticker).where(Fill.mode == mode, Fill.filled_at >= since, Fill.filled_at <= now).union(
        select(Position.ticker).where(Position.mode == mode, Position.settled_at >= since,
                                      Position.settled_at <= now))
    rows = (await s.scalars(select(Fill).where(Fill.mode == mode, Fill.ticker.in_(touched))
                            .order_by(Fill.id))).all()
    return [fill_fact(f) for f in rows]


async def today_pnl(sessions: async_sessionmaker[AsyncSession], mode: str, now: datetime) -> int | None:
    """The newest snapshot's equity minus the first of today (UTC); None when today has no snapshot yet."""
    q = _snapshots(mode, day_start(now.astimezone(UTC).date()), now)
    async with sessions() as s:
        first = (await s.execute(q.order_by(SNAP.ts).limit(1))).first()
        last = (await s.execute(q.order_by(SNAP.ts.desc()).limit(1))).first()
    if first is None or last is None:
        return None
    return _snap(last)[1] - _snap(first)[1]


async def report(sessions: async_sessionmaker[AsyncSession], mode: str, *, days: int, now: datetime, mark: Mark,
              max_points: int = MAX_POINTS) -> dict[str, Any]:
    """The `cmd.executor.pnl` answer for the last `days` UTC days of `mode`, as of `now`."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    dates = window(now, days)
    since = day_start(dates[0])
    async with sessions() as s:
        curve = await _curve(s, mode, since, now, max_points)
        boundaries = await _boundaries(s, mode, since, now)
        fills = await _fills(s, mode, since, now)
        positions = list((await s.scalars(select(Position).where(Position.mode == mode)
                                          .order_by(Position.ticker))).all())
    return summarize(now=now, dates=dates, curve=curve, boundaries=boundaries, fills=fills, positions=positions,
                     mark=mark, max_points=max_points)


__all__ = [
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "MAX_POINTS",
    "Mark",
    "PositionLike",
    "Snapshot",
    "book_mark",
    "by_family",
    "day_equity",
    "day_start",
    "downsample",
    "equity_of",
    "fill_fact",
    "realized_events",
    "report",
    "summarize",
    "today_pnl",
    "unrealized",
    "window",
]
