"""The executor's `cmd.executor.*` answers: status, positions, orders, fills, balance, pnl, decisions,
pause, resume, flatten, reconcile, strategies. Plain data in integer money (ticks, 1/100 contract); the CLI
and Telegram render it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from libs.common.bus import Bus, CommandError
from libs.common.money import ONE_CONTRACT
from libs.common.strategies import parse_allocation, strategy_caps
from services.executor.ledger import fill_summary, order_summary, position_summary
from services.executor.pnl import DEFAULT_DAYS, MAX_DAYS, book_mark, report, today_pnl
from services.executor.risk import reserved_total
from services.executor.strategy_report import strategies

if TYPE_CHECKING:
    from services.executor.service import Executor

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ExecutorCommands:
    """Answers for one executor replica (one replica of the queue group answers each request)."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    async def serve(self, bus: Bus) -> list[Any]:
        handlers: dict[str, Handler] = {
            "status": self.status, "positions": self.positions, "orders": self.orders, "fills": self.fills,
            "balance": self.balance, "pnl": self.pnl, "decisions": self.decisions, "pause": self.pause,
            "resume": self.resume, "flatten": self.flatten, "reconcile": self.reconcile,
            "strategies": self.strategies,
        }
        return [await bus.serve("executor", verb, fn) for verb, fn in handlers.items()]

    async def status(self, _: dict[str, Any]) -> dict[str, Any]:
        ex = self.ex
        assert ex.desk is not None and ex.control is not None
        st = ex.control.state
        return {"mode": ex.mode.value, "instance": ex.settings.instance, "allow_live": ex.settings.allow_live,
                "paused": st.paused,
                "pause_reason": st.pause_reason, "blocked": st.blocks(ex.mode, None, ex.clock()),
                "daily_loss_tripped": ex.desk.daily_loss_tripped, "bankroll_ticks": ex.desk.bankroll,
                "decisions": dict(ex.desk.decisions), "orders_sent": ex.orders.sent,
                "open_orders": len(await ex.ledger.open_orders()), "limits": ex.settings.risk.as_dict(),
                "reserved": await reserved_total(ex.ledger.sessions, ex.mode.value),
                "today_pnl_ticks": await today_pnl(ex.ledger.sessions, ex.mode.value, ex.clock()),
                "last_reconcile": ex.reconciler.last.as_dict() if ex.reconciler and ex.reconciler.last else None,
                "jobs": ex.jobs.snapshot(), "outbox": await ex.outbox.backlog(),
                "contract": ex.contract.as_dict() if ex.contract is not None else None, **self.freshness()}

    def freshness(self) -> dict[str, Any]:
        ex = self.ex
        age = ex.markets.freshest_book_age_s()
        fresh = age is not None and age <= ex.settings.max_book_age_s
        return {"freshest_book_age_s": None if age is None or math.isinf(age) else round(age, 3),
                "fresh_books": sum(ex.markets.book_fresh(st) for st in ex.markets.by_ticker.values()),
                "waiting_for_fresh_data": not fresh, "freshness_limits": ex.settings.freshness.as_dict()}

    async def positions(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        """Open positions with their mark (best bid of the held leg) and unrealized P&L at that mark."""
        out = []
        mark = book_mark(self.ex.markets)
        for p in await self.ex.ledger.positions():
            row = position_summary(p)
            bid = mark(p.ticker, p.position)
            held = abs(p.position)
            row["mark_ticks"] = bid
            row["unrealized_pnl_ticks"] = None if bid is None else held * bid // ONE_CONTRACT - p.cost_ticks
            out.append(row)
        return out

    async def orders(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        if req.get("open"):
            return [order_summary(o) for o in await self.ex.ledger.open_orders()]
        return [order_summary(o) for o in await self.ex.ledger.recent_orders(int(req.get("limit", 50)))]

    async def fills(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        return [fill_summary(f) for f in await self.ex.ledger.fills(int(req.get("limit", 50)))]

    async def balance(self, _: dict[str, Any]) -> dict[str, Any]:
        bal = await self.ex.refresh_balance()
        return {"balance_ticks": bal, "balance_usd": f"{bal / 10_000:.4f}"}

    async def pnl(self, req: dict[str, Any]) -> dict[str, Any]:
        """{days} → the equity curve, P&L per UTC day, realized / unrealized / fees, by family (see pnl.py)."""
        days = req.get("days", DEFAULT_DAYS)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise CommandError("bad_request", f"days must be a whole number from 1 to {MAX_DAYS}, got {days!r}")
        ex = self.ex
        return await report(ex.ledger.sessions, ex.mode.value, days=days, now=ex.clock(), mark=book_mark(ex.markets))

    async def strategies(self, _: dict[str, Any]) -> dict[str, Any]:
        """P&L, fill rate, adverse selection, inventory and capital per strategy (strategy_report.py)."""
        ex = self.ex
        assert ex.desk is not None and ex.maker is not None and ex.flip is not None
        allocation = parse_allocation(ex.settings.allocation)
        maker = ex.maker.status()
        extra = {"market_making": {"adverse_selection_ticks": maker["adverse_selection_ticks"], "maker": maker},
                 "quick_flip": {"flip": ex.flip.stats.as_dict()}}
        return await strategies(ex.ledger.sessions, ex.mode.value, mark=book_mark(ex.markets),
                                caps=strategy_caps(allocation, ex.settings.risk.max_portfolio),
                                allocation=allocation, extra=extra)

    async def decisions(self, req: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """{signal_ids} → what the desk did with each signal it has seen: {signal_id: {status, reason, ...}}."""
        ids = req.get("signal_ids")
        if not isinstance(ids, list) or len(ids) > 500 or not all(isinstance(x, str) for x in ids):
            raise CommandError("bad_request", "signal_ids must be a list of at most 500 signal ids")
        return {o.signal_id: {"status": o.status, "reason": o.reason, "client_order_id": o.client_order_id}
                for o in await self.ex.ledger.orders_for_signals(ids) if o.signal_id}

    async def pause(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.ex.pause(str(req.get("reason") or "operator"))
        return {"paused": True}

    async def resume(self, _: dict[str, Any]) -> dict[str, Any]:
        ex = self.ex
        assert ex.control is not None and ex.desk is not None
        await ex.control.set_paused(False)
        ex.desk.daily_loss_tripped = False
        return {"paused": False}

    async def flatten(self, _: dict[str, Any]) -> dict[str, Any]:
        # Allowed while paused: cancels and reduce-only exits only take risk off.
        assert self.ex.desk is not None
        return await self.ex.desk.flatten()

    async def reconcile(self, _: dict[str, Any]) -> dict[str, Any]:
        return await self.ex.reconcile()


__all__ = ["ExecutorCommands"]
