"""Integer money and ages as people read them: dollars, cents, contracts, "42 min".

Shared by every view (the CLI's tables, the notifier's Telegram messages, the dashboard), so a
number reads the same wherever an operator sees it. Rendering only: nothing here rounds money that
is then used again.
"""

from __future__ import annotations

from libs.common.money import ONE_CONTRACT, ONE_DOLLAR


def usd(ticks: int | None, *, sign: bool = False) -> str:
    """$1,234.56 (or +12.30 / -4.00 with `sign`); — when unknown."""
    if ticks is None:
        return "—"
    value = ticks / ONE_DOLLAR
    return f"{value:+,.2f}" if sign else f"${value:,.2f}"


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


MODE_LABEL = {"sim": "SIM", "paper": "PAPER", "demo": "DEMO", "live": "LIVE"}

__all__ = ["MODE_LABEL", "age", "contracts", "num", "price", "usd"]
