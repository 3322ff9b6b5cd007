"""How many contracts to buy: fixed dollars or fractional Kelly, in 1/100 contract.

Kelly for a binary contract bought at all-in cost `a` per contract (price plus the fee for the way it
fills, as a fraction of $1) with win probability `p`: winning pays `1 - a`, losing costs `a`, so the
bankroll fraction to spend is f* = (p - a) / (1 - a). We spend `fraction x confidence x f*` of the
bankroll — full Kelly is far too aggressive for model probabilities that are themselves estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from libs.common.money import ONE_CONTRACT, ONE_DOLLAR, cost, fee


@dataclass(frozen=True, slots=True)
class Size:
    """A size decision; `count` 0 means do not trade, with `reason`."""

    count: int
    kelly: float  # the unscaled Kelly fraction (0 when there is no edge)
    reason: str = ""


def kelly_fraction(p: float, all_in_cost: int) -> float:
    """f* = (p - a) / (1 - a) for a contract costing `all_in_cost` ticks (price + fee per contract)."""
    a = all_in_cost / ONE_DOLLAR
    if a <= 0 or a >= 1:
        return 0.0
    return max((p - a) / (1 - a), 0.0)


def per_contract_fee(price: int, *, taker: bool, fee_type: str, fee_multiplier: Decimal | int | str) -> int:
    """Fee for one contract, rounded up to $0.0001 (the fee on a real fill is never more per contract)."""
    return fee(ONE_CONTRACT, price, rate="taker" if taker else "maker", fee_type=fee_type, multiplier=fee_multiplier)


def size_order(*, mode: Literal["kelly", "fixed"], p_leg: float, leg_price: int, taker: bool, confidence: float,
               bankroll: int, kelly_scale: float, fixed_budget: int, max_order: int, fee_type: str,
               fee_multiplier: Decimal | int | str, count_step: int = 1, available: int | None = None) -> Size:
    """Contracts (1/100) to buy one leg at `leg_price` ticks, within `max_order` ticks of cost and fees.

    `p_leg` is the model probability of the leg paying out; `available` caps a taker at the displayed size.
    """
    if not 0 < leg_price < ONE_DOLLAR:
        return Size(0, 0.0, "bad_price")
    unit_fee = per_contract_fee(leg_price, taker=taker, fee_type=fee_type, fee_multiplier=fee_multiplier)
    all_in = leg_price + unit_fee
    k = kelly_fraction(p_leg, all_in)
    if mode == "kelly":
        if k <= 0:
            return Size(0, k, "no_edge")
        budget = int(bankroll * k * kelly_scale * confidence)
    else:
        budget = fixed_budget
    budget = min(budget, max_order)
    if budget <= 0:
        return Size(0, k, "no_bankroll" if bankroll <= 0 else "size_zero")
    count = budget * ONE_CONTRACT // all_in
    if available is not None:
        count = min(count, available)
    count -= count % count_step
    # The all-in estimate rounds the fee per contract; check the exact order cost and trim if needed.
    while count > 0 and order_cost(count, leg_price, taker=taker, fee_type=fee_type,
                                   fee_multiplier=fee_multiplier) > min(budget, max_order):
        count -= count_step
    if count <= 0:
        return Size(0, k, "size_zero")
    return Size(count, k)


def order_cost(count: int, price: int, *, taker: bool, fee_type: str, fee_multiplier: Decimal | int | str) -> int:
    """Worst-case cash an order of `count` at leg price `price` can spend, fee included (rounded up)."""
    rate: Literal["taker", "maker"] = "taker" if taker else "maker"
    return cost(count, price, rounding="up") + fee(count, price, rate=rate, fee_type=fee_type,
                                                   multiplier=fee_multiplier)
