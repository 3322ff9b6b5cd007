"""`kdesk strategies` rendering: one column a strategy in dollars and contracts, the maker and quick flip lines."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.ctl import cli, render

# A `cmd.executor.strategies` answer as the executor sends it: integer ticks ($0.0001) and 1/100 contracts.
ANSWER: dict[str, Any] = {
    "mode": "paper",
    "strategies": {
        "directional": {
            "allocation": 0.4, "realized_ticks": 1_254_300, "unrealized_ticks": -87_500, "fees_ticks": 41_200,
            "pnl_ticks": 1_166_800, "positions": 3, "inventory": 4_500, "orders": 28, "filled_orders": 19,
            "ordered_count": 8_000, "filled_count": 5_720, "fill_rate": 0.715, "open_orders": 2,
            "capital_used_ticks": 12_345_600, "capital_cap_ticks": 20_000_000, "adverse_selection_ticks": None},
        "market_making": {
            "allocation": 0.3, "realized_ticks": 312_000, "unrealized_ticks": 15_000, "fees_ticks": 8_900,
            "pnl_ticks": 327_000, "positions": 2, "inventory": 1_250, "orders": 412, "filled_orders": 37,
            "ordered_count": 41_200, "filled_count": 3_300, "fill_rate": 0.0801, "open_orders": 6,
            "capital_used_ticks": 4_102_000, "capital_cap_ticks": 15_000_000, "adverse_selection_ticks": 125,
            "maker": {"enabled": True, "leader": True, "series": ["KXHIGHNY"], "killed_until": None,
                      "created": 412, "amended": 1_830, "canceled": 395, "pulled": {"stale_book": 12},
                      "blocked": {"cap_strategy": 3}, "deferred": 4, "kills": 0, "measured_fills": 37,
                      "quote_update_ms_p50": 4.2, "quote_update_ms_p99": 31.0}},
        "quick_flip": {
            "allocation": 0.3, "realized_ticks": -45_000, "unrealized_ticks": 0, "fees_ticks": 6_000,
            "pnl_ticks": -45_000, "positions": 0, "inventory": 0, "orders": 14, "filled_orders": 9,
            "ordered_count": 1_400, "filled_count": 850, "fill_rate": 0.6071, "open_orders": 1,
            "capital_used_ticks": 900_000, "capital_cap_ticks": 15_000_000, "adverse_selection_ticks": None,
            "flip": {"exits_rested": 9, "exits_grown": 2, "entries_abandoned": 1, "given_up": 3}},
    },
}


def idle(answer: dict[str, Any]) -> dict[str, Any]:
    """`answer` with the maker and quick flip unallocated and never used (the default allocation)."""
    out = copy.deepcopy(answer)
    for name in ("market_making", "quick_flip"):
        s = out["strategies"][name]
        s.update(allocation=0.0, orders=0, positions=0, realized_ticks=0)
    out["strategies"]["market_making"]["maker"].update(enabled=False, created=0, amended=0, canceled=0)
    out["strategies"]["quick_flip"]["flip"] = dict.fromkeys(out["strategies"]["quick_flip"]["flip"], 0)
    return out


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= render.WIDTH, "\n".join(lines)
    return lines


def _row(lines: list[str], label: str) -> list[str]:
    """The cells of the table row `label` (the strategies' columns, left to right)."""
    [line] = [line for line in lines if line.startswith(f"│ {label} ")]
    return [c.strip() for c in line.strip("│").split("│")][1:]


def test_strategies_shows_each_strategy_in_dollars_percent_and_contracts(capsys: pytest.CaptureFixture[str]) -> None:
    render.strategies("paper", ANSWER)
    lines = _lines(capsys)
    assert "mode PAPER" in lines[0] and "3 strategies" in lines[0]
    header = next(line for line in lines if "directional" in line)
    assert header.index("directional") < header.index("market_making") < header.index("quick_flip")
    assert _row(lines, "allocation") == ["40%", "30%", "30%"]
    assert _row(lines, "capital used") == ["$1,234.56", "$410.20", "$90.00"]
    assert _row(lines, "capital cap") == ["$2,000.00", "$1,500.00", "$1,500.00"]
    assert _row(lines, "P&L") == ["+116.68", "+32.70", "-4.50"]
    assert _row(lines, "  realized") == ["+125.43", "+31.20", "-4.50"]
    assert _row(lines, "  unrealized") == ["-8.75", "+1.50", "+0.00"]
    assert _row(lines, "fees") == ["$4.12", "$0.89", "$0.60"]
    assert _row(lines, "fill rate") == ["71.5%", "8.0%", "60.7%"]
    assert _row(lines, "inventory (ct)") == ["45", "12.50", "0"]
    assert _row(lines, "open orders") == ["2", "6", "1"]
    assert _row(lines, "adverse $/ct") == ["—", "+0.0125", "—"]  # $0.0125 a contract: 1.25¢
    out = "\n".join(lines)
    assert "maker: leading on KXHIGHNY · quotes 412 created, 1,830 amended, 395 canceled" in out
    assert "KILL SWITCH" not in out
    assert "quick flip: 9 exit(s) rested · 3 given up" in out


def test_a_standby_maker_with_its_kill_switch_on_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    killed = copy.deepcopy(ANSWER)
    killed["strategies"]["market_making"]["maker"].update(leader=False, killed_until="2026-12-03T14:05:00+00:00",
                                                          kills=1)
    render.strategies("live", killed)
    lines = _lines(capsys)
    out = " ".join(line.strip() for line in lines)
    assert "mode LIVE" in lines[0]
    assert "maker: standby on KXHIGHNY" in out and "KILL SWITCH on until 14:05 UTC" in out


def test_strategies_not_allocated_and_never_used_get_no_line(capsys: pytest.CaptureFixture[str]) -> None:
    render.strategies("sim", idle(ANSWER))
    out = "\n".join(_lines(capsys))
    assert "maker:" not in out and "quick flip:" not in out
    assert "0%" in out  # still in the table, allocated nothing


def test_strategies_with_nothing_reported_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    render.strategies("sim", {"mode": "sim", "strategies": {}})
    out = capsys.readouterr().out
    assert "mode SIM" in out and "no strategies" in out


def test_kdesk_strategies_parses_json_and_asks_the_executor() -> None:
    args = cli.build_parser().parse_args(["strategies", "--json"])
    assert (args.func, args.view, args.json) == (cli.cmd_view, "strategies", True)
    assert cli.build_parser().parse_args(["strategies"]).json is False
    assert "strategies" in cli.DESK_VERBS  # `kdesk desk strategies`: the raw answer too
