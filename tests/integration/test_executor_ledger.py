"""The ledger is the same whatever order the venue's frames arrive in, and counts nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from libs.common.config import Mode
from libs.common.db import Fill, Order, OrderEvent, Position, create_engine, session_factory
from libs.common.money import format_count, format_dollars
from services.executor.ledger import Ledger
from services.executor.markets import Markets
from services.executor.orders import OrderLifecycle
from services.executor.paper import PaperBroker
from services.executor.risk import Intent, RiskGate
from tests.integration.test_executor import rows
from tests.kit.desk import desk_settings

NOW = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
T = "KXHIGHNY-26NOV23-B52.5"


def fill(trade: str, count: int, fee: int) -> dict:
    return {"type": "fill", "msg": {
        "trade_id": trade, "order_id": "ex-1", "market_ticker": T, "is_taker": False, "side": "yes",
        "outcome_side": "yes", "book_side": "bid", "yes_price_dollars": format_dollars(3100),
        "count_fp": format_count(count), "fee_cost": format_dollars(fee), "action": "buy", "client_order_id": "kd-x",
        "ts_ms": int(NOW.timestamp() * 1000)}}


def user_order(status: str, filled: int, remaining: int, fees: int, at_ms: int) -> dict:
    return {"type": "user_order", "msg": {
        "order_id": "ex-1", "ticker": T, "status": status, "outcome_side": "yes", "book_side": "bid",
        "yes_price_dollars": format_dollars(3100), "fill_count_fp": format_count(filled),
        "remaining_count_fp": format_count(remaining), "initial_count_fp": format_count(1000),
        "maker_fees_dollars": format_dollars(fees), "client_order_id": "kd-x", "last_updated_ts_ms": at_ms}}


FRAMES = [fill("t1", 400, 11), user_order("resting", 400, 600, 11, 1), fill("t2", 600, 16),
          user_order("executed", 1000, 0, 27, 2)]


# (mode, frame order): each run books the same order under its own mode (the ledger is per mode).
RUNS = [("sim", [0, 1, 2, 3, 0, 2]),  # as sent, then the fills again (a REST poll overlapping the WS)
        ("paper", [3, 2, 1, 0, 0, 2]),  # newest first: the final state before any fill
        ("demo", [1, 2, 0, 3, 3, 1])]  # interleaved, with an old order state replayed last


async def test_frames_in_any_order_and_repeated_give_the_same_books(db_url: str) -> None:
    engine = create_engine(db_url)
    sessions = session_factory(engine)

    try:
        for mode, order in RUNS:
            ledger = Ledger(sessions, mode)
            om = OrderLifecycle(PaperBroker(lambda: NOW, 10**8), ledger, Markets(), mode=Mode(mode), clock=lambda: NOW)
            gate = RiskGate(sessions, mode, desk_settings().risk, {})
            await gate.reserve(Intent(client_order_id="kd-x", signal_id="sig", leg="yes", family="weather",
                                      series_ticker="KXHIGHNY", event_ticker="KXHIGHNY-26NOV23", ticker=T,
                                      book_side="bid", yes_price=3100, count=1000, post_only=True,
                                      fee_multiplier=Decimal(1)), now=NOW)
            for i in order:
                await om.on_frame(FRAMES[i])
            [o] = await rows(db_url, Order, Order.mode == mode)
            [p] = await rows(db_url, Position, Position.mode == mode)
            fills = await rows(db_url, Fill, Fill.mode == mode)
            assert (o.status, o.fill_count, o.remaining_count, o.fees_ticks) == ("executed", 1000, 0, 27), mode
            assert (p.position, p.fees_paid_ticks, p.cost_ticks) == (1000, 27, 31_000), mode
            assert sorted(f.trade_id for f in fills) == ["t1", "t2"]
            # The outbox holds each fill once and ends with the order filled, whatever the frame order.
            events = await rows(db_url, OrderEvent, OrderEvent.mode == mode)
            assert sorted(e.event_id for e in events if e.kind == "fill") == ["ord:fill:t1:ex-1", "ord:fill:t2:ex-1"]
            assert [e.kind for e in events if e.kind == "filled"] == ["filled"], mode
            assert [e.kind for e in events].count("accepted") == 1, mode  # the first frame with its exchange id
            assert all(e.message is not None and e.published_at is None for e in events), mode
    finally:
        await engine.dispose()
