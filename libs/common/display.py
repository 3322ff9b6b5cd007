"""Integer money and ages as people read them: dollars, cents, contracts, "42 min".

Shared by every view (the CLI's tables, the notifier's Telegram messages, the dashboard), so a
number reads the same wherever an operator sees it. Rendering only: nothing here rounds money that
is then used again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from libs.common.money import ONE_CONTRACT, ONE_DOLLAR


def usd(ticks: int | None, *, sign: bool = False) -> str:
    """$1,234.56 (or +12.30 / -4.00 with `sign`); — when unknown."""
    if ticks is None:
        return "—"
    value = ticks / ONE_DOLLAR
    return f"{value:+,.2f}" if sign else f"${value:,.2f}"


def usd_per_contract(ticks: int | None) -> str:
    """A signed per-contract amount in dollars to the tick (+0.0125): a maker's edge is a fraction of a cent."""
    return "—" if ticks is None else f"{ticks / ONE_DOLLAR:+,.4f}"


def price(ticks: int | None) -> str:
    """A per-contract price: cents with the sub-cent digits Kalshi allows."""
    return "—" if ticks is None else f"{ticks / 100:.2f}¢"


def contracts(n: int | None) -> str:
    """Whole contracts without decimals, fractional ones with two."""
    if n is None:
        return "—"
    whole, part = divmod(abs(n), ONE_CONTRACT)
    text = f"{whole:,}" if not part else f"{abs(n) / ONE_CONTRACT:,.2f}"
    return f"-{text}" if n < 0 else text


def age(seconds: float | None) -> str:
    """12 s, 42 min, 3.5 h."""
    if seconds is None:
        return "never"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


def num(x: float | None, fmt: str = ".4f") -> str:
    """A score with a fixed format; — when unknown."""
    return "—" if x is None else format(x, fmt)


def _in_use(row: Mapping[str, Any], *counts: int | None) -> bool:
    """A strategy worth a line: allocated, or with orders, positions or counts of its own."""
    return bool(row.get("allocation") or row.get("orders") or row.get("positions") or any(counts))


def maker_note(row: Mapping[str, Any]) -> str | None:
    """The maker in one line (`cmd.executor.strategies`' market_making row): leading or standby, its quotes,
    the kill switch when tripped; None when it is neither allocated nor active."""
    m = row.get("maker")
    if m is None or not _in_use(row, m.get("created"), m.get("amended"), m.get("canceled")):
        return None
    state = "off" if not m.get("enabled") else "leading" if m.get("leader") else "standby"
    series = ", ".join(m.get("series") or [])
    text = (f"maker: {state}{f' on {series}' if series and m.get('enabled') else ''} · quotes "
            f"{m.get('created', 0):,} created, {m.get('amended', 0):,} amended, {m.get('canceled', 0):,} canceled")
    if until := m.get("killed_until"):
        at = datetime.fromisoformat(until)
        text += f" · KILL SWITCH on until {at.astimezone(UTC) if at.tzinfo else at:%H:%M} UTC"
    return text


def flip_note(row: Mapping[str, Any]) -> str | None:
    """Quick flip in one line: exits rested and positions given up; None when neither allocated nor active."""
    f = row.get("flip")
    if f is None or not _in_use(row, *f.values()):
        return None
    return f"quick flip: {f.get('exits_rested', 0):,} exit(s) rested · {f.get('given_up', 0):,} given up"


MODE_LABEL = {"sim": "SIM", "paper": "PAPER", "demo": "DEMO", "live": "LIVE"}

__all__ = ["MODE_LABEL", "age", "contracts", "flip_note", "maker_note", "num", "price", "usd",
           "usd_per_contract"]
