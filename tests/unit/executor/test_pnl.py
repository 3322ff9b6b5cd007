"""The P&L answer's pure parts: day bucketing, downsampling, marks, realized P&L by day — exact integers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import pairwise

import pytest

from services.executor.ledger import FillFact, apply_to_position
from services.executor.pnl import (
    by_family,
    day_equity,
    downsample,
    realized_events,
    summarize,
    unrealized,
    window,
)


@dataclass
class Pos:
    ticker: str
    family: str | None
    position: int
    cost_ticks: int
    realized_pnl_ticks: int
    fees_paid_ticks: int
    settled_at: datetime | None = None


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 9, day, hour, minute, tzinfo=UTC)


def fill(ticker: str, outcome: str, leg_price: int, count: int, fee: int, ts: datetime, n: int = 0) -> FillFact:
    """A fill buying `count` of `outcome` at `leg_price` (a NO buy is an `ask` at YES $1 − price)."""
    yes = leg_price if outcome == "yes" else 10_000 - leg_price
    return FillFact(trade_id=f"t{n}", order_id=f"o{n}", ticker=ticker, book_side="bid" if outcome == "yes" else "ask",
                    outcome_side=outcome, yes_price=yes, count=count, fee=fee, is_taker=False, filled_at=ts)


def test_downsampling_keeps_the_first_and_last_point_and_the_order() -> None:
    points = list(range(1_000))
    thin = downsample(points, 200)
    assert len(thin) == 200 and thin[0] == 0 and thin[-1] == 999
    assert all(a < b for a, b in pairwise(thin))  # in order, no repeats
    gaps = {b - a for a, b in pairwise(thin)}
    assert gaps <= {5, 6}  # evenly spaced: 999 / 199 ≈ 5.02
    assert downsample(points[:200], 200) == points[:200]  # short enough: untouched
    assert downsample([7, 8, 9], 2) == [7, 9]
    assert downsample(points[:201], 200)[-1] == 200
    with pytest.raises(ValueError, match="at least 2"):
        downsample(points, 1)


def test_window_is_the_last_n_utc_dates_with_today_last() -> None:
    # 01:00 on the 10th at UTC-5 is 06:00 UTC on the 10th; 22:00 on the 9th at UTC-5 is already the 10th in UTC.
    assert window(datetime(2026, 9, 9, 22, 0, tzinfo=timezone(timedelta(hours=-5))), 3) == [
        date(2026, 9, 8), date(2026, 9, 9), date(2026, 9, 10)]
    assert window(at(10, 0, 0), 1) == [date(2026, 9, 10)]


def test_days_run_from_their_first_snapshot_to_the_next_days_first_or_their_own_last() -> None:
    est = timezone(timedelta(hours=-5))
    snaps = [
        (at(8, 0, 5), 1_000_000), (at(8, 12), 1_010_000), (at(8, 23, 59), 1_020_000),
        (at(9, 0, 1), 1_021_000), (at(9, 18), 990_000),
        # the 10th has nothing; the 11th is reached by a snapshot stamped in UTC-5 on the 10th (= 01:00 UTC on the 11th)
        (datetime(2026, 9, 10, 20, 0, tzinfo=est), 995_000), (at(11, 9), 1_001_000),
        (at(12, 1), 1_002_000), (at(12, 7), 1_003_000),
    ]
    dates = [date(2026, 9, d) for d in range(7, 13)]
    got = day_equity(reversed(snaps), dates)  # order of arrival does not matter
    assert got == {
        date(2026, 9, 7): (None, None),  # no snapshot
        date(2026, 9, 8): (1_000_000, 1_021_000),  # to the 9th's first snapshot, not its own last
        date(2026, 9, 9): (1_021_000, 990_000),  # the 10th has none: its own last
        date(2026, 9, 10): (None, None),
        date(2026, 9, 11): (995_000, 1_002_000),
        date(2026, 9, 12): (1_002_000, 1_003_000),  # today: up to its newest
    }


def test_unrealized_is_the_held_leg_at_its_bid_less_cost_and_zero_without_a_book() -> None:
    assert unrealized(1_000, 40_000, 4_200) == 2_000  # 10 YES bought at 40c, bid 42c
    assert unrealized(-500, 15_000, 2_500) == -2_500  # 5 NO bought at 30c, NO bid 25c
    assert unrealized(250, 10_000, 4_100) == 250  # 2.5 contracts at 41c are worth $1.025
    assert unrealized(333, 10_000, 3_333) == 11_098 - 10_000  # 333 × 3333 / 100 = 11 098.89 floors
    assert unrealized(1_000, 40_000, None) == 0  # no book: marked at cost
    assert unrealized(0, 0, 4_000) == 0


def test_realized_is_replayed_per_fill_net_of_fees_and_a_settlement_lands_on_its_day() -> None:
    fills = [
        fill("A", "yes", 4_000, 1_000, 20, at(8, 10), 1),  # buy 10 YES at 40c
        fill("B", "no", 3_000, 500, 15, at(9, 9), 2),  # buy 5 NO at 30c
        fill("A", "no", 4_500, 400, 10, at(9, 11), 3),  # buy 4 NO at 45c: closes 4 of A for +$0.60
    ]
    # B settled NO on the 10th: 5 × $1 − $1.50 cost = +$3.50 on top of its fee.
    positions = [Pos("A", "weather", 600, 24_000, 6_000 - 30, 30),
                 Pos("B", "btc", 0, 0, -15 + 35_000, 15, settled_at=at(10, 10))]
    events = realized_events(fills, positions)
    assert events == [(at(8, 10), -20), (at(9, 9), -15), (at(9, 11), 6_000 - 10), (at(10, 10), 35_000)]
    assert sum(t for _, t in events) == sum(p.realized_pnl_ticks for p in positions)
    # The replay is the ledger's own arithmetic.
    pos, basis, real = 0, 0, 0
    for f in (fills[0], fills[2]):
        pos, basis, real = apply_to_position(pos, basis, real, f)
    assert (pos, basis, real) == (600, 24_000, 6_000)


def test_by_family_counts_open_positions_at_their_mark_and_names_the_unknown() -> None:
    positions = [Pos("A", "weather", 600, 24_000, 5_970, 30), Pos("C", "weather", 200, 10_000, -5, 5),
                 Pos("B", "btc", 0, 0, 34_985, 15), Pos("X", None, -100, 2_000, 0, 1)]
    bids = {("A", "yes"): 4_200, ("X", "no"): 2_500}

    def mark(ticker: str, position: int) -> int | None:
        return bids.get((ticker, "yes" if position > 0 else "no"))

    assert by_family(positions, mark) == {
        "btc": {"realized_ticks": 34_985, "unrealized_ticks": 0, "fees_ticks": 15, "positions": 0},
        "unknown": {"realized_ticks": 0, "unrealized_ticks": 500, "fees_ticks": 1, "positions": 1},
        "weather": {"realized_ticks": 5_965, "unrealized_ticks": 1_200, "fees_ticks": 35, "positions": 2},
    }


def test_the_answer_puts_it_together_as_plain_json() -> None:
    now = at(10, 15)
    dates = window(now, 3)
    snaps = [(at(7, 23), 900_000), (at(8, 1), 1_000_000), (at(9, 0, 30), 1_004_000), (at(9, 20), 1_003_000),
             (at(10, 2), 1_006_000), (at(10, 14), 1_001_500)]
    fills = [fill("A", "yes", 4_000, 1_000, 20, at(8, 10), 1), fill("A", "no", 4_500, 400, 10, at(9, 11), 2),
             fill("C", "yes", 5_000, 200, 5, at(5, 10), 3)]  # C: bought before the window
    positions = [Pos("A", "weather", 600, 24_000, 5_970, 30), Pos("C", "weather", 200, 10_000, -5, 5)]

    def mark(ticker: str, position: int) -> int | None:
        return {"A": 4_200}.get(ticker)

    got = summarize(now=now, dates=dates, curve=snaps[1:], boundaries=snaps[1:], fills=fills, positions=positions,
                    mark=mark, max_points=3)
    assert json.loads(json.dumps(got)) == got  # plain data
    assert got["equity"] == [{"ts": "2026-09-08T01:00:00+00:00", "equity_ticks": 1_000_000},
                             {"ts": "2026-09-09T20:00:00+00:00", "equity_ticks": 1_003_000},
                             {"ts": "2026-09-10T14:00:00+00:00", "equity_ticks": 1_001_500}]
    assert got["days"] == [
        {"date": "2026-09-08", "start_equity_ticks": 1_000_000, "end_equity_ticks": 1_004_000, "pnl_ticks": 4_000,
         "realized_ticks": -20, "fees_ticks": 20, "fills": 1},
        {"date": "2026-09-09", "start_equity_ticks": 1_004_000, "end_equity_ticks": 1_006_000, "pnl_ticks": 2_000,
         "realized_ticks": 5_990, "fees_ticks": 10, "fills": 1},
        {"date": "2026-09-10", "start_equity_ticks": 1_006_000, "end_equity_ticks": 1_001_500, "pnl_ticks": -4_500,
         "realized_ticks": 0, "fees_ticks": 0, "fills": 0},
    ]
    assert got["today_pnl_ticks"] == -4_500 == got["days"][-1]["pnl_ticks"]
    assert (got["realized_ticks"], got["unrealized_ticks"], got["fees_ticks"]) == (5_965, 1_200, 35)
    assert got["by_family"] == {"weather": {"realized_ticks": 5_965, "unrealized_ticks": 1_200, "fees_ticks": 35,
                                            "positions": 2}}
    assert (got["window_days"], got["since"], got["as_of"]) == (3, "2026-09-08T00:00:00+00:00",
                                                                "2026-09-10T14:00:00+00:00")


def test_an_empty_desk_answers_with_zeros_and_nulls() -> None:
    now = at(10, 15)
    got = summarize(now=now, dates=window(now, 2), curve=[], boundaries=[], fills=[], positions=[],
                    mark=lambda t, p: None)
    assert got["equity"] == [] and got["today_pnl_ticks"] is None and got["as_of"] is None
    assert [d["pnl_ticks"] for d in got["days"]] == [None, None]
    assert (got["realized_ticks"], got["unrealized_ticks"], got["fees_ticks"], got["by_family"]) == (0, 0, 0, {})
