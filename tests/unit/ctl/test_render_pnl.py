"""`kdesk pnl` rendering: the summary line, the equity sparkline, the per-day and by-family tables."""

from __future__ import annotations

import pytest

from services.ctl import cli, render

ANSWER = {
    "window_days": 2, "since": "2026-09-09T00:00:00+00:00", "now": "2026-09-10T15:00:00+00:00",
    "as_of": "2026-09-10T14:30:00+00:00",
    "equity": [{"ts": "2026-09-09T00:10:00+00:00", "equity_ticks": 10_000_000},
               {"ts": "2026-09-09T12:00:00+00:00", "equity_ticks": 10_250_000},
               {"ts": "2026-09-10T14:30:00+00:00", "equity_ticks": 10_125_000}],
    "days": [{"date": "2026-09-09", "start_equity_ticks": 10_000_000, "end_equity_ticks": 10_200_000,
              "pnl_ticks": 200_000, "realized_ticks": 180_000, "fees_ticks": 1_200, "fills": 3},
             {"date": "2026-09-10", "start_equity_ticks": None, "end_equity_ticks": None, "pnl_ticks": None,
              "realized_ticks": -4_500, "fees_ticks": 300, "fills": 1}],
    "today_pnl_ticks": -75_000, "realized_ticks": 175_500, "unrealized_ticks": 12_300, "fees_ticks": 1_500,
    "by_family": {"btc": {"realized_ticks": -4_500, "unrealized_ticks": 0, "fees_ticks": 300, "positions": 0},
                  "weather": {"realized_ticks": 180_000, "unrealized_ticks": 12_300, "fees_ticks": 1_200,
                              "positions": 2}},
}


def test_sparkline_scales_between_the_lowest_and_highest_value() -> None:
    assert render.sparkline([0, 7, 14]) == "▁▄█"
    assert render.sparkline([-5, -5, -5]) == "▁▁▁"  # flat
    assert render.sparkline([]) == ""
    wide = render.sparkline(list(range(1_000)), width=10)
    assert len(wide) == 10 and wide[0] == "▁" and wide[-1] == "█"


def test_pnl_renders_summary_sparkline_and_tables_in_dollars(capsys: pytest.CaptureFixture[str]) -> None:
    render.pnl("paper", ANSWER)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "mode PAPER" in lines[0] and "2 day(s)" in lines[0]
    assert "today -7.50 · realized +17.55 · unrealized +1.23 · fees $0.15" in out
    assert "equity ▁█▄" in out and "low $1,000.00 · high $1,025.00 · last $1,012.50 at 14:30 UTC" in out
    day = next(line for line in lines if "2026-09-09" in line)
    assert all(x in day for x in ("$1,000.00", "$1,020.00", "+20.00", "+18.00", "$0.12", "3"))
    empty_day = next(line for line in lines if "2026-09-10" in line)
    assert "—" in empty_day and "-0.45" in empty_day
    weather = next(line for line in lines if "weather" in line)
    assert all(x in weather for x in ("2", "+18.00", "+1.23", "$0.12"))
    assert max(len(line) for line in lines) <= render.WIDTH


def test_pnl_with_nothing_yet_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    empty = ANSWER | {"equity": [], "by_family": {}, "today_pnl_ticks": None, "as_of": None}
    render.pnl("sim", empty)
    out = capsys.readouterr().out
    assert "today — ·" in out and "no balance snapshots in this window yet" in out and "no positions yet" in out


def test_status_shows_todays_pnl(capsys: pytest.CaptureFixture[str]) -> None:
    ex = {"paused": False, "bankroll_ticks": 10_000_000, "open_orders": 0, "orders_sent": 0, "today_pnl_ticks": -63_700}
    render.status("sim", ex, None, {})
    assert any(line.startswith("today P&L") and "-6.37" in line for line in capsys.readouterr().out.splitlines())
    render.status("sim", ex | {"today_pnl_ticks": None}, None, {})
    assert "today P&L     —" in capsys.readouterr().out


def test_kdesk_pnl_parses_days_and_json() -> None:
    args = cli.build_parser().parse_args(["pnl", "--days", "30", "--json"])
    assert (args.func, args.days, args.json) == (cli.cmd_pnl, 30, True)
    assert cli.build_parser().parse_args(["pnl"]).days == 7


def test_status_shows_the_kalshi_contract_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    ex = {"paused": True, "pause_reason": "contract: market.yes_bid_dollars", "bankroll_ticks": 0, "open_orders": 0,
          "orders_sent": 0,
          "contract": {"ok": False, "problems": ["market.yes_bid_dollars: '42' is not a dollar string"]}}
    render.status("sim", ex, None, {})
    out = capsys.readouterr().out
    assert "CONTRACT MISMATCH" in out and "yes_bid_dollars: '42'" in out
    render.status("sim", ex | {"paused": False, "contract": {"ok": True, "market": "KXHIGHNY-26NOV23-B52.5"}}, None, {})
    assert "contract ok" in capsys.readouterr().out
