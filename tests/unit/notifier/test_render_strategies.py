"""/strategies rendering: a phone-wide table in dollars and contracts, the mode, the maker and quick flip lines."""

from __future__ import annotations

import copy
import html
import re

from services.notifier import render
from services.notifier.bot import BY_NAME
from tests.unit.ctl.test_render_strategies import ANSWER, idle


def _table(text: str) -> list[str]:
    [pre] = re.findall(r"<pre>(.*?)</pre>", text, flags=re.S)
    return html.unescape(pre).splitlines()


def _row(table: list[str], label: str) -> list[str]:
    [line] = [line for line in table if line.startswith(label + " ")]
    return line[len(label):].split()


def test_strategies_fit_a_phone_in_dollars_percent_and_contracts() -> None:
    text = render.strategies("paper", ANSWER)
    assert text.startswith("<b>[PAPER]</b> 3 strategies")
    table = _table(text)
    assert max(len(line) for line in table) <= render.PHONE_WIDTH, "\n".join(table)
    assert "directional" in table[1] and "making" in table[1] and "flip" in table[1]
    assert _row(table, "alloc.") == ["40%", "30%", "30%"]
    assert _row(table, "cap. used") == ["$1,234.56", "$410.20", "$90.00"]
    assert _row(table, "cap") == ["$2,000.00", "$1,500.00", "$1,500.00"]
    assert _row(table, "P&L") == ["+116.68", "+32.70", "-4.50"]
    assert _row(table, "fees") == ["$4.12", "$0.89", "$0.60"]
    assert _row(table, "fill") == ["71.5%", "8.0%", "60.7%"]
    assert _row(table, "inv. ct") == ["45", "12.50", "0"]
    assert _row(table, "open") == ["2", "6", "1"]
    assert _row(table, "adv./ct") == ["—", "+0.0125", "—"]
    assert "<i>P&amp;L: realized after fees + unrealized at the bid</i>" in text  # HTML-escaped
    assert "maker: leading on KXHIGHNY · quotes 412 created, 1,830 amended, 395 canceled" in text
    assert "quick flip: 9 exit(s) rested · 3 given up" in text


def test_a_killed_maker_is_in_bold_and_idle_strategies_get_no_line() -> None:
    killed = copy.deepcopy(ANSWER)
    killed["strategies"]["market_making"]["maker"].update(leader=False, killed_until="2026-12-03T14:05:00+00:00")
    text = render.strategies("live", killed)
    assert text.startswith("<b>⚠️ [LIVE]</b>")
    assert re.search(r"<b>maker: standby on KXHIGHNY .*KILL SWITCH on until 14:05 UTC</b>", text)
    quiet = render.strategies("sim", idle(ANSWER))
    assert "[SIM]" in quiet and "maker:" not in quiet and "quick flip:" not in quiet
    assert "no strategies reported" in render.strategies("sim", {"mode": "sim", "strategies": {}})


def test_viewers_may_ask_for_strategies() -> None:
    assert not BY_NAME["strategies"].operator
