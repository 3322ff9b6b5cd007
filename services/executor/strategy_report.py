"""`cmd.executor.strategies`: P&L, fill rate, adverse selection, inventory and capital per strategy.

What each number counts (integer ticks, 1/100 contract):
- `realized_ticks`, `fees_ticks`, `unrealized_ticks`, `positions`, `inventory`: the positions the strategy
  holds or held (a position's strategy is the one whose order opened it from flat, and a market belongs
  to one strategy at a time, so no position is shared); unrealized at the best bid of the held leg, as
  `cmd.executor.positions` marks it;
- `orders`, `filled_orders`, `fill_rate`: the strategy's orders that reached the exchange (not `blocked`,
  not rejected) — the fill rate is contracts filled over contracts ordered;
- `capital_used_ticks` / `capital_cap_ticks`: what the reservation counts against the strategy's share of
  the portfolio cap (open orders as if filled, plus positions at cost), and that share;
- `adverse_selection_ticks`: the maker's — per contract, how far the fair value moved against a fill
  30 s after it, averaged (positive is bad) — measured by the replica that quotes, since it started;
  None for the other strategies and before any fill was measured.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import Order, Position
from libs.common.db.executor import OPEN_ORDER_STATUSES, RiskStrategyUsage
from libs.common.strategies import STRATEGIES, Strategy
from services.executor.pnl import Mark, unrealized

REACHED = ("resting", "executed", "canceled", "pending")  # statuses of orders the exchange saw (or may have)


def _blank(cap: int) -> dict[str, Any]:
    return {"realized_ticks": 0, "unrealized_ticks": 0, "fees_ticks": 0, "pnl_ticks": 0, "positions": 0,
            "inventory": 0, "orders": 0, "filled_orders": 0, "ordered_count": 0, "filled_count": 0,
            "fill_rate": None, "open_orders": 0, "capital_used_ticks": 0, "capital_cap_ticks": cap,
            "adverse_selection_ticks": None}


async def strategies(sessions: async_sessionmaker[AsyncSession], mode: str, *, mark: Mark,
                     caps: dict[Strategy, int], allocation: dict[Strategy, float],
                     extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The answer: {"mode", "strategies": {name: {...}}} with every strategy, allocated or not."""
    out = {s: _blank(caps.get(s, 0)) | {"allocation": allocation.get(s, 0.0)} for s in STRATEGIES}
    async with sessions() as s:
        for p in (await s.scalars(select(Position).where(Position.mode == mode))).all():
            row = out.get(p.strategy)
            if row is None:
                continue
            row["realized_ticks"] += p.realized_pnl_ticks
            row["fees_ticks"] += p.fees_paid_ticks
            if p.position:
                row["positions"] += 1
                row["inventory"] += abs(p.position)
                row["unrealized_ticks"] += unrealized(p.position, p.cost_ticks, mark(p.ticker, p.position))
        q = (select(Order.strategy, func.count(), func.count().filter(Order.fill_count > 0),
                    func.coalesce(func.sum(Order.initial_count), 0), func.coalesce(func.sum(Order.fill_count), 0),
                    func.count().filter(Order.status.in_(OPEN_ORDER_STATUSES)))
             .where(Order.mode == mode, Order.status.in_(REACHED)).group_by(Order.strategy))
        for name, n, filled, ordered, got, open_n in (await s.execute(q)).all():
            if name in out:
                out[name].update(orders=n, filled_orders=filled, ordered_count=int(ordered), filled_count=int(got),
                                 fill_rate=round(int(got) / int(ordered), 4) if ordered else None,
                                 open_orders=open_n)
        for u in (await s.scalars(select(RiskStrategyUsage).where(RiskStrategyUsage.mode == mode))).all():
            if u.strategy in out:
                out[u.strategy]["capital_used_ticks"] = u.capital_ticks
    for name, row in out.items():
        row["pnl_ticks"] = row["realized_ticks"] + row["unrealized_ticks"]
        row.update((extra or {}).get(name, {}))
    return {"mode": mode, "strategies": out}


__all__ = ["strategies"]
