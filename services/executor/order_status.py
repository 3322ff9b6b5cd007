"""How an order's status may move, and which `ord.*` event each move is.

    intent ──► pending ──► resting ──► executed
       │          │           │
       │          │           └──────► canceled   (by us, the venue, expiry; possibly partly filled)
       │          ├──────────────────► executed   (an immediate fill)
       │          ├──────────────────► canceled   (an IOC remainder, never reached the exchange)
       │          └──────────────────► rejected   (the venue refused it)
       └─────────────────────────────► blocked    (a local decision not to trade)

`intent` may also jump straight to what the venue reports (reconciliation adopting an order whose
`pending` mark was lost). A final status never moves again; a status may repeat with new totals
(a resting order partly filled, a canceled one whose late fill arrives), and totals only grow.
"""

from __future__ import annotations

from typing import Literal

OrderStatus = Literal["intent", "pending", "resting", "executed", "canceled", "rejected", "blocked"]

FINAL: frozenset[str] = frozenset({"executed", "canceled", "rejected", "blocked"})
OPEN: frozenset[str] = frozenset({"intent", "pending", "resting"})
NOT_YET_ON_EXCHANGE: frozenset[str] = frozenset({"intent", "pending"})

_NEXT: dict[str, frozenset[str]] = {
    "intent": frozenset({"pending", "resting", "executed", "canceled", "rejected", "blocked"}),
    "pending": frozenset({"resting", "executed", "canceled", "rejected"}),
    "resting": frozenset({"executed", "canceled"}),
}


def allowed(prev: str, new: str) -> bool:
    """May an order in `prev` move to `new`? (Same status: only its totals change, always allowed.)"""
    return prev == new or new in _NEXT.get(prev, frozenset())


def event_kind(new: str, fill_count: int) -> str:
    """The `ord.*` kind announcing a move (or a totals change) into `new`."""
    if new == "resting":
        return "partially_filled" if fill_count else "resting"
    return {"executed": "filled"}.get(new, new)


__all__ = ["FINAL", "NOT_YET_ON_EXCHANGE", "OPEN", "OrderStatus", "allowed", "event_kind"]
