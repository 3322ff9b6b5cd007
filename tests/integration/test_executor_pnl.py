"""`cmd.executor.pnl` and `kdesk pnl` over real NATS + PostgreSQL, against ledger rows written by hand.

A paper-mode replica (its venue is the in-process paper broker, and paper positions live in the ledger
only, so reconciliation leaves hand-written positions alone) on a fixed clock: the equity snapshot it
takes at start-up lands on the same key as the last one written here and is dropped (snapshots are
keyed by (mode, ts)), so every number in the answer follows from the rows below.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from libs.common import subjects
from libs.common.bus import Bus, CommandError
from libs.common.config import Mode
from libs.common.db import BalanceSnapshot, Fill, Position, create_engine, session_factory
from libs.common.events import BookUpdate, MarketDefinition
from services.ctl import cli
from services.executor.paper import PaperBroker
from services.executor.service import Executor
from tests.integration.test_kalshi_client import until
from tests.kit.desk import desk_settings

NOW = datetime(2026, 9, 10, 15, 0, tzinfo=UTC)
A, C = "KXHIGHNY-26SEP10-B80", "KXHIGHCHI-26SEP10-B75"  # weather, with books
B, D = "KXBTCD-26SEP1017-T70000", "KXBTCD-26SEP1117-T72000"  # btc: B settled, D open without a book


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 9, day, hour, minute, tzinfo=UTC)


# (ts, balance, portfolio value); equity = balance + portfolio value.
SNAPSHOTS = [
    (at(7, 23), 9_900_000, 0),  # before the 3-day window
    (at(8, 0, 10), 10_000_000, 0), (at(8, 12), 9_960_000, 40_000), (at(8, 23, 50), 9_970_000, 40_500),
    (at(9, 0, 5), 9_975_000, 40_000), (at(9, 18), 9_950_000, 60_000),
    (at(10, 1), 9_990_000, 45_000), (at(10, 9), 10_010_000, 30_000), (NOW, 10_020_000, 41_800),
]


def _fill(n: int, ticker: str, event: str, outcome: str, leg_price: int, count: int, fee: int, ts: datetime,
          mode: str = "paper") -> dict[str, Any]:
    yes = leg_price if outcome == "yes" else 10_000 - leg_price
    return {"mode": mode, "fill_id": f"f{n}", "trade_id": f"t{n}", "order_id": f"o{n}", "ticker": ticker,
            "event_ticker": event, "book_side": "bid" if outcome == "yes" else "ask", "outcome_side": outcome,
            "action": "buy", "count": count, "yes_price": yes, "no_price": 10_000 - yes, "is_taker": False,
            "fee_ticks": fee, "filled_at": ts}


FILLS = [  # in the order the ledger recorded them
    _fill(1, C, "KXHIGHCHI-26SEP10", "yes", 5_000, 200, 5, at(5, 10)),  # 2 YES at 50c, before the window
    _fill(2, A, "KXHIGHNY-26SEP10", "yes", 4_000, 1_000, 20, at(8, 10)),  # 10 YES at 40c
    _fill(3, B, "KXBTCD-26SEP1017", "no", 3_000, 500, 15, at(9, 9)),  # 5 NO at 30c
    _fill(4, A, "KXHIGHNY-26SEP10", "no", 4_500, 400, 10, at(9, 11)),  # 4 NO at 45c: closes 4 of A, +$0.60
    _fill(5, D, "KXBTCD-26SEP1117", "yes", 2_000, 300, 7, at(10, 9)),  # 3 YES at 20c
    _fill(6, A, "KXHIGHNY-26SEP10", "yes", 4_000, 10_000, 99, at(9, 12), mode="sim"),  # another mode
]

POSITIONS = [  # what the ledger made of those fills; B settled NO at 10:00 on the 10th: 5 × $1 − $1.50
    {"ticker": A, "event_ticker": "KXHIGHNY-26SEP10", "family": "weather", "position": 600, "cost_ticks": 24_000,
     "realized_pnl_ticks": 6_000 - 30, "fees_paid_ticks": 30},
    {"ticker": B, "event_ticker": "KXBTCD-26SEP1017", "family": "btc", "position": 0, "cost_ticks": 0,
     "realized_pnl_ticks": -15 + 35_000, "fees_paid_ticks": 15, "settled_at": at(10, 10)},
    {"ticker": C, "event_ticker": "KXHIGHCHI-26SEP10", "family": "weather", "position": 200, "cost_ticks": 10_000,
     "realized_pnl_ticks": -5, "fees_paid_ticks": 5},
    {"ticker": D, "event_ticker": "KXBTCD-26SEP1117", "family": "btc", "position": 300, "cost_ticks": 6_000,
     "realized_pnl_ticks": -7, "fees_paid_ticks": 7},
]
BIDS = {A: (4_200, 5_500), C: (5_300, 4_500)}  # (best YES bid, best NO bid): no arbitrage in either


async def _write_ledger(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as s, s.begin():
            for ts, bal, pv in SNAPSHOTS:
                s.add(BalanceSnapshot(mode="paper", ts=ts, balance_ticks=bal, portfolio_value_ticks=pv, source="paper"))
            s.add(BalanceSnapshot(mode="sim", ts=at(10, 2), balance_ticks=1, portfolio_value_ticks=None))
            for f in FILLS:
                s.add(Fill(**f))
                await s.flush()  # ids in the order recorded
            for p in POSITIONS:
                s.add(Position(mode="paper", exposure_ticks=p["cost_ticks"], **p))
            s.add(Position(mode="sim", ticker=A, event_ticker="KXHIGHNY-26SEP10", family="weather", position=10_000,
                           cost_ticks=40_000, realized_pnl_ticks=-99, fees_paid_ticks=99))
    finally:
        await engine.dispose()


async def _publish_markets(bus: Bus) -> None:
    """What feeds would have published in paper mode: definitions of A, C and D (B has settled), books of A and C."""
    for seq, (ticker, series, event) in enumerate(((A, "KXHIGHNY", "KXHIGHNY-26SEP10"),
                                                   (C, "KXHIGHCHI", "KXHIGHCHI-26SEP10"),
                                                   (D, "KXBTCD", "KXBTCD-26SEP1117")), start=1):
        await bus.publish_js(subjects.md_market(series, ticker), MarketDefinition(
            ts_event=NOW, mode=Mode.PAPER, ticker=ticker, event_ticker=event, series_ticker=series, status="active",
            close_time=at(11, 4), fee_type="quadratic", fee_multiplier=1))
        if ticker in BIDS:
            yes, no = BIDS[ticker]
            await bus.publish_js(subjects.md_book(series, ticker), BookUpdate(
                ts_event=NOW, mode=Mode.PAPER, ticker=ticker, series_ticker=series, seq=seq,
                yes_bids=((yes - 100, 500), (yes, 1_000)), no_bids=((no, 1_000),)))


def _run_cli(argv: list[str]) -> int:
    args = cli.build_parser().parse_args(argv)
    return int(args.func(args))


async def test_pnl_answers_exactly_what_the_ledger_holds_on_the_bus_and_through_kdesk(
        nats_url: str, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    await _write_ledger(db_url)
    bus = await Bus.connect(nats_url, service="pnl-test", mode=Mode.PAPER)
    await bus.provision()
    await _publish_markets(bus)
    settings = desk_settings(mode=Mode.PAPER)
    ex_bus = await Bus.connect(nats_url, service="executor", mode=Mode.PAPER)
    engine = create_engine(db_url)
    paper = PaperBroker(lambda: datetime.now(UTC), 10**7, freshness=settings.freshness)
    ex = Executor(settings, ex_bus, session_factory(engine), paper, updates=paper, clock=lambda: NOW,
                  loop_interval_s=0.2)
    try:
        await ex.start()
        await until(lambda: all(ex.markets.get(t) is not None and ex.markets.get(t).book is not None for t in BIDS),
                    what="books of A and C")
        got = await bus.request("executor", "pnl", {"days": 3})

        assert (got["window_days"], got["since"], got["now"], got["as_of"]) == (
            3, "2026-09-08T00:00:00+00:00", NOW.isoformat(), NOW.isoformat())
        # Every snapshot of the window, in order (fewer than 200: none thinned out); none of another mode.
        assert got["equity"] == [{"ts": ts.isoformat(), "equity_ticks": bal + pv} for ts, bal, pv in SNAPSHOTS[1:]]
        assert got["days"] == [
            # from its first snapshot to the 9th's first: 10 015 000 − 10 000 000
            {"date": "2026-09-08", "start_equity_ticks": 10_000_000, "end_equity_ticks": 10_015_000,
             "pnl_ticks": 15_000, "realized_ticks": -20, "fees_ticks": 20, "fills": 1},
            # A's close (+6 000 − fee 10) and B's fee (−15)
            {"date": "2026-09-09", "start_equity_ticks": 10_015_000, "end_equity_ticks": 10_035_000,
             "pnl_ticks": 20_000, "realized_ticks": 5_990 - 15, "fees_ticks": 25, "fills": 2},
            # B's settlement (+35 000) and D's fee (−7); today runs to the newest snapshot
            {"date": "2026-09-10", "start_equity_ticks": 10_035_000, "end_equity_ticks": 10_061_800,
             "pnl_ticks": 26_800, "realized_ticks": 35_000 - 7, "fees_ticks": 7, "fills": 1},
        ]
        assert got["today_pnl_ticks"] == 10_061_800 - 10_035_000
        assert got["realized_ticks"] == 5_970 + 34_985 - 5 - 7
        assert got["fees_ticks"] == 30 + 15 + 5 + 7
        # A: 6 × 42c − $2.40 = +$0.12; C: 2 × 53c − $1.00 = +$0.06; D has no book: at cost, 0.
        assert got["unrealized_ticks"] == 1_200 + 600
        assert got["by_family"] == {
            "btc": {"realized_ticks": 34_985 - 7, "unrealized_ticks": 0, "fees_ticks": 22, "positions": 1},
            "weather": {"realized_ticks": 5_970 - 5, "unrealized_ticks": 1_800, "fees_ticks": 35, "positions": 2},
        }
        # The same mark as the positions view.
        positions = {p["ticker"]: p for p in await bus.request("executor", "positions")}
        assert positions[A]["unrealized_pnl_ticks"] + positions[C]["unrealized_pnl_ticks"] == got["unrealized_ticks"]

        one = await bus.request("executor", "pnl", {"days": 1})
        assert [d["date"] for d in one["days"]] == ["2026-09-10"] and one["equity"][0]["ts"] == at(10, 1).isoformat()
        assert (await bus.request("executor", "pnl"))["window_days"] == 7
        for bad in (0, 366, "7", 2.5, True):
            with pytest.raises(CommandError) as e:
                await bus.request("executor", "pnl", {"days": bad})
            assert e.value.code == "bad_request"
        status = await bus.request("executor", "status")
        assert status["today_pnl_ticks"] == got["today_pnl_ticks"]

        monkeypatch.setenv("KDESK_NATS_URL", nats_url)
        monkeypatch.setenv("KDESK_MODE", "paper")
        capsys.readouterr()
        assert await asyncio.to_thread(_run_cli, ["pnl", "--days", "3", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == got
        assert await asyncio.to_thread(_run_cli, ["pnl", "--days", "3"]) == 0
        out = capsys.readouterr().out
        assert "mode PAPER" in out and "today +2.68 · realized +4.09 · unrealized +0.18 · fees $0.01" in out
        assert "2026-09-09" in out and "+2.00" in out and "weather" in out
        assert await asyncio.to_thread(_run_cli, ["pnl", "--days", "400"]) == 1
        assert "bad_request" in capsys.readouterr().err
    finally:
        await ex.stop()
        await ex_bus.close()
        await bus.close()
        await engine.dispose()


async def test_many_snapshots_are_thinned_to_200_points_keeping_the_newest(nats_url: str, db_url: str) -> None:
    """A week of snapshots every 30 s (20 160 rows) comes back as at most 200 points, oldest to newest."""
    from datetime import timedelta

    from sqlalchemy import insert

    from services.executor.pnl import report

    engine = create_engine(db_url)
    sessions = session_factory(engine)
    start = at(4, 0)
    try:
        async with sessions() as s, s.begin():
            await s.execute(insert(BalanceSnapshot), [
                {"mode": "paper", "ts": start + timedelta(seconds=30 * i), "balance_ticks": i} for i in range(20_160)])
        newest = start + timedelta(seconds=30 * 20_159)
        got = await report(sessions, "paper", days=7, now=newest, mark=lambda t, p: None)
    finally:
        await engine.dispose()
    curve = got["equity"]
    assert 100 < len(curve) <= 200
    assert curve[0] == {"ts": start.isoformat(), "equity_ticks": 0}
    assert curve[-1] == {"ts": newest.isoformat(), "equity_ticks": 20_159}
    assert [p["equity_ticks"] for p in curve] == sorted({p["equity_ticks"] for p in curve})
    # Each day runs from its first snapshot (00:00:00) to the next day's; the last day to its newest.
    assert [(d["start_equity_ticks"], d["end_equity_ticks"]) for d in got["days"]] == [
        (2_880 * k, 2_880 * (k + 1)) for k in range(6)] + [(2_880 * 6, 20_159)]
