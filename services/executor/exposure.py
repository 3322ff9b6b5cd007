"""Worst-case loss of holdings, netted across the markets of one event.

The brackets of one weather day (or the strikes of one BTC hour) settle on one number, so a YES on
one bracket and a NO on its neighbour partly hedge. The exposure of an event is the largest loss
over every value the underlying can take: each market pays by its strike rule, and between two
consecutive strikes every market's result is constant, so testing each strike, just above and just
below it, and beyond both ends covers every case. Markets without strike information count alone at
their own worst case (no netting is assumed where none is known).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from libs.common.money import ONE_CONTRACT, ONE_DOLLAR

_EPS = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class Strike:
    """When a market resolves YES: `greater` (x > floor), `less` (x < cap), `between` (floor <= x <= cap)."""

    strike_type: str
    floor: Decimal | None
    cap: Decimal | None

    def yes_at(self, x: Decimal) -> bool | None:
        """Whether YES wins at value `x`; None when the rule is unknown."""
        st, lo, hi = self.strike_type, self.floor, self.cap
        if st == "greater" and lo is not None:
            return x > lo
        if st == "greater_or_equal" and lo is not None:
            return x >= lo
        if st == "less" and hi is not None:
            return x < hi
        if st == "less_or_equal" and hi is not None:
            return x <= hi
        if st == "between" and lo is not None and hi is not None:
            return lo <= x <= hi
        return None

    def points(self) -> list[Decimal]:
        return [v for v in (self.floor, self.cap) if v is not None]


@dataclass(slots=True)
class Holding:
    """YES and NO contracts in one market (held or assumed filled) and what they cost, in ticks."""

    yes: int = 0  # 1/100 contract
    no: int = 0
    cost: int = 0  # ticks paid or committed for both legs, fees included

    def pnl(self, yes_wins: bool) -> int:
        """Profit in ticks if the market resolves this way."""
        payout = (self.yes if yes_wins else self.no) * ONE_DOLLAR // ONE_CONTRACT
        return payout - self.cost

    def worst(self) -> int:
        """The larger loss of the two outcomes (0 if neither loses)."""
        return max(0, -self.pnl(True), -self.pnl(False))


def market_exposure(h: Holding) -> int:
    """Worst-case loss of one market on its own."""
    return h.worst()


def event_exposure(holdings: Mapping[str, Holding], strikes: Mapping[str, Strike | None]) -> int:
    """Worst-case loss of an event's markets together, netting where strike rules are known."""
    known = {t: strikes[t] for t in holdings if strikes.get(t) is not None and strikes[t].points()}  # type: ignore[union-attr]
    alone = sum(h.worst() for t, h in holdings.items() if t not in known)
    if not known:
        return alone
    points = sorted({p for s in known.values() for p in s.points()})  # type: ignore[union-attr]
    candidates = [points[0] - 1, points[-1] + 1]
    for p in points:
        candidates += [p - _EPS, p, p + _EPS]
    worst = 0
    for x in candidates:
        outcome = [s.yes_at(x) for s in known.values()]  # type: ignore[union-attr]
        if any(o is None for o in outcome):
            return alone + sum(h.worst() for t, h in holdings.items() if t in known)
        pnl = sum(holdings[t].pnl(bool(o)) for t, o in zip(known, outcome, strict=True))
        worst = max(worst, -pnl)
    return alone + worst


def gross(holdings: Iterable[Holding]) -> int:
    """Total cost at risk, no netting."""
    return sum(h.cost for h in holdings)
