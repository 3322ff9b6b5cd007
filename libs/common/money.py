"""Integer money for the whole desk: prices in $0.0001 ticks, counts in 1/100 contract, grids and fees.

Kalshi's dollar strings (`"0.4200"`) and fixed-point counts (`"10.00"`) become ints here, at the client
boundary, and nowhere else. No float ever enters money arithmetic (DESIGN §3): money strings must be str, and
the one float input, a series fee multiplier, is read through its decimal repr.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import lru_cache
from itertools import pairwise
from typing import Literal, TypeAlias

Price: TypeAlias = int
"""A price in $0.0001 ticks: $1 = 10_000; a YES price on a market lies in (0, 10_000)."""
Count: TypeAlias = int
"""A contract count in 1/100 contract: 1 contract = 100."""

ONE_DOLLAR: Price = 10_000
ONE_CONTRACT: Count = 100

_PRICE_DIGITS = 4  # decimals in a $0.0001 tick
_COUNT_DIGITS = 2  # decimals in a 0.01 contract

# Strict plain decimal: optional '-', ASCII digits (\d would admit other scripts), optional fraction.
# Lengths are capped so a hostile string cannot reach int()'s digit limit; real fields have <= 6 decimals.
_FIXED_RE = re.compile(r"(-?)([0-9]{1,15})(?:\.([0-9]{1,12}))?")

RoundDir: TypeAlias = Literal["up", "down"]
"""Rounding direction: "up" is toward +infinity, "down" toward -infinity (also for negative values)."""


class MoneyError(ValueError):
    """A money value (price, count, grid, fee input) is malformed, off-grid or out of range."""


class UnsupportedFeeTypeError(MoneyError, NotImplementedError):
    """A series fee type whose schedule we do not know, so no fee can be computed for it."""


def _parse_fixed(
    s: object,
    *,
    what: str,
    unit: str,
    digits: int,
    example: str,
    signed: bool,
    allow_round: RoundDir | None,
) -> int:
    """Parse a fixed-point decimal string into an int scaled by 10**digits."""
    if allow_round not in (None, "up", "down"):
        raise MoneyError(f"allow_round must be 'up', 'down' or None, got {allow_round!r}")
    if not isinstance(s, str):
        raise MoneyError(
            f"{what} must be a string like {example!r}, got {s!r} ({type(s).__name__}); "
            "convert at the API boundary and never pass floats"
        )
    m = _FIXED_RE.fullmatch(s)
    if m is None:
        raise MoneyError(
            f"malformed {what} {s!r}: expected a plain decimal string like {example!r} "
            "(ASCII digits, optional '.' and fraction; no '+', exponent or spaces)"
        )
    sign, whole, frac = m.groups()
    if sign and not signed:
        raise MoneyError(f"negative {what} {s!r} is not allowed here; pass signed=True for P&L or deltas")
    frac = frac or ""
    kept, rest = frac[:digits], frac[digits:]
    magnitude = int(whole) * 10**digits + int(kept.ljust(digits, "0"))
    if rest.strip("0"):
        if allow_round is None:
            raise MoneyError(
                f"{what} {s!r} is off-grid: expected a whole number of {unit} (at most {digits} decimals)"
                + ("; pass allow_round='up' or 'down' to round explicitly" if what == "dollar amount" else "")
            )
        # The magnitude was truncated toward zero; step it away from zero when that is the asked direction.
        if (allow_round == "up") != bool(sign):
            magnitude += 1
    return -magnitude if sign else magnitude


def parse_dollars(s: str, *, signed: bool = False, allow_round: RoundDir | None = None) -> Price:
    """Parse a Kalshi dollar string ("0.4200", "12.345600") into $0.0001 ticks, exactly."""
    return _parse_fixed(
        s,
        what="dollar amount",
        unit="$0.0001",
        digits=_PRICE_DIGITS,
        example="0.4200",
        signed=signed,
        allow_round=allow_round,
    )


def format_dollars(p: Price, decimals: int = 4) -> str:
    """Format ticks as a Kalshi dollar string with 2-4 decimals, refusing to drop precision."""
    if not isinstance(p, int):
        raise MoneyError(f"price must be an int number of $0.0001 ticks, got {p!r} ({type(p).__name__})")
    if not 2 <= decimals <= _PRICE_DIGITS:
        raise MoneyError(f"Kalshi dollar strings take 2 to 4 decimals, got decimals={decimals}")
    whole, frac = divmod(abs(p), ONE_DOLLAR)
    drop = 10 ** (_PRICE_DIGITS - decimals)
    if frac % drop:
        raise MoneyError(f"{p} ticks cannot be written with {decimals} decimals without rounding")
    sign = "-" if p < 0 else ""
    return f"{sign}{whole}.{frac // drop:0{decimals}d}"


def parse_count(s: str, *, signed: bool = False) -> Count:
    """Parse a Kalshi fixed-point count ("10.00", "2.5", "1") into 1/100 contracts, exactly."""
    return _parse_fixed(
        s,
        what="contract count",
        unit="0.01 contract",
        digits=_COUNT_DIGITS,
        example="10.00",
        signed=signed,
        allow_round=None,
    )


def format_count(c: Count) -> str:
    """Format 1/100 contracts as a Kalshi fixed-point count string ("10.00")."""
    if not isinstance(c, int):
        raise MoneyError(f"count must be an int number of 1/100 contracts, got {c!r} ({type(c).__name__})")
    whole, frac = divmod(abs(c), ONE_CONTRACT)
    sign = "-" if c < 0 else ""
    return f"{sign}{whole}.{frac:02d}"


def complement(p: Price) -> Price:
    """Return the other side's price: a YES price at p is a NO price at $1 - p."""
    if not 0 <= p <= ONE_DOLLAR:
        raise MoneyError(f"price {p} ticks is outside [0, $1]; it has no complement")
    return ONE_DOLLAR - p


def leg_price(book_side: Literal["bid", "ask"], yes_price: Price) -> Price:
    """The price of the leg a V2 order buys: `bid` buys YES at the YES price, `ask` buys NO at $1 - it."""
    return yes_price if book_side == "bid" else complement(yes_price)


def outcome_price(side: Literal["yes", "no"], yes_price: Price) -> Price:
    """The price of one outcome's contract, from the YES price (a fill of NO at YES 40¢ cost 60¢)."""
    return yes_price if side == "yes" else complement(yes_price)


def cost(count: Count, price: Price, *, rounding: Literal["up", "down", "exact"]) -> Price:
    """Return count x price in ticks; count x price / 100 may be fractional, so rounding is explicit."""
    if rounding not in ("up", "down", "exact"):
        raise MoneyError(f"rounding must be 'up', 'down' or 'exact', got {rounding!r}")
    q, r = divmod(count * price, ONE_CONTRACT)
    if r == 0:
        return q
    if rounding == "down":
        return q  # divmod floors, i.e. toward -infinity
    if rounding == "up":
        return q + 1
    raise MoneyError(
        f"{format_count(count)} contracts at {format_dollars(price)} is not a whole number of $0.0001 ticks; "
        "use rounding='up' or 'down'"
    )


class PriceGrid:
    """A market's valid order prices, built from its `price_ranges`; immutable and shared between markets."""

    __slots__ = ("_levels", "_ranges", "_valid")

    def __init__(self, ranges: Iterable[tuple[Price, Price, Price]]) -> None:
        """Build from (start, end, step) triples in ticks; they must tile [0, $1] without gaps."""
        rs = sorted(ranges)
        if not rs:
            raise MoneyError("price_ranges is empty: a market needs at least one {start, end, step} range")
        for start, end, step in rs:
            where = f"price range [{format_dollars(start)}, {format_dollars(end)}]"
            if step <= 0:
                raise MoneyError(f"{where} has step {format_dollars(step)}; the step must be positive")
            if start >= end:
                raise MoneyError(f"{where} is empty or reversed: start must be below end")
            if start < 0 or end > ONE_DOLLAR:
                raise MoneyError(f"{where} reaches outside [$0, $1]")
        for (_, end, _), (start, _, _) in pairwise(rs):
            if end != start:
                raise MoneyError(
                    f"price_ranges are not contiguous: one range ends at {format_dollars(end)} "
                    f"but the next starts at {format_dollars(start)}"
                )
        if rs[0][0] != 0 or rs[-1][1] != ONE_DOLLAR:
            raise MoneyError(
                f"price_ranges cover [{format_dollars(rs[0][0])}, {format_dollars(rs[-1][1])}], "
                "expected exactly [0.0000, 1.0000]"
            )
        valid = bytearray(ONE_DOLLAR + 1)
        for start, end, step in rs:
            # Half-open is enough: a boundary (0.10 in tapered_deci_cent) is the next range's start, so it
            # is always a level, as Kalshi's "on the step of either adjacent range" rule requires.
            for p in range(start, end, step):
                valid[p] = 1
        self._ranges: tuple[tuple[Price, Price, Price], ...] = tuple(rs)
        self._valid = bytes(valid)
        # $0 and $1 are never order prices, whatever the ranges say.
        self._levels: tuple[Price, ...] = tuple(p for p in range(1, ONE_DOLLAR) if valid[p])

    @classmethod
    def from_api(cls, price_ranges: Sequence[Mapping[str, str]]) -> PriceGrid:
        """Build (or reuse) the grid for a market's API `price_ranges` list, validating it."""
        if not isinstance(price_ranges, Sequence) or isinstance(price_ranges, str | bytes):
            raise MoneyError(f"price_ranges must be a list of {{start, end, step}} objects, got {price_ranges!r}")
        key = []
        for i, r in enumerate(price_ranges):
            if not isinstance(r, Mapping) or not {"start", "end", "step"} <= r.keys():
                raise MoneyError(f"price_ranges[{i}] must have 'start', 'end' and 'step', got {r!r}")
            try:
                key.append((parse_dollars(r["start"]), parse_dollars(r["end"]), parse_dollars(r["step"])))
            except MoneyError as e:
                raise MoneyError(f"price_ranges[{i}]: {e}") from e
        return _cached_grid(tuple(key))

    @property
    def ranges(self) -> tuple[tuple[Price, Price, Price], ...]:
        """The (start, end, step) triples in ticks, ascending."""
        return self._ranges

    def to_api(self) -> list[dict[str, str]]:
        """The grid as Kalshi's `price_ranges` list of dollar strings."""
        return [{"start": format_dollars(a), "end": format_dollars(b), "step": format_dollars(c)}
                for a, b, c in self._ranges]

    @classmethod
    def linear_cent(cls) -> PriceGrid:
        """Return the whole-cent grid ($0.01 to $0.99), the common case."""
        return _cached_grid(((0, ONE_DOLLAR, 100),))

    def is_valid(self, p: Price) -> bool:
        """Return True when p is strictly between $0 and $1 and on this grid."""
        return isinstance(p, int) and 0 < p < ONE_DOLLAR and self._valid[p] == 1

    def validate(self, p: Price) -> Price:
        """Return p unchanged if it is a valid order price, else raise MoneyError saying why."""
        if self.is_valid(p):
            return p
        if not isinstance(p, int):
            raise MoneyError(f"price must be an int number of $0.0001 ticks, got {p!r} ({type(p).__name__})")
        if not 0 < p < ONE_DOLLAR:
            raise MoneyError(f"price {format_dollars(p)} is outside (0, $1): $0 and $1 are not order prices")
        below, above = self.round_down(p), self.round_up(p)
        near = " and ".join(format_dollars(x) for x in (below, above) if x is not None)
        raise MoneyError(f"price {format_dollars(p)} is off this market's tick grid; nearest valid: {near}")

    def round_down(self, p: Price) -> Price | None:
        """Return the highest valid price <= p, or None when there is none."""
        i = bisect_right(self._levels, p)
        return self._levels[i - 1] if i else None

    def round_up(self, p: Price) -> Price | None:
        """Return the lowest valid price >= p, or None when there is none."""
        i = bisect_left(self._levels, p)
        return self._levels[i] if i < len(self._levels) else None

    def next_above(self, p: Price) -> Price | None:
        """Return the lowest valid price strictly above p, or None."""
        i = bisect_right(self._levels, p)
        return self._levels[i] if i < len(self._levels) else None

    def next_below(self, p: Price) -> Price | None:
        """Return the highest valid price strictly below p, or None."""
        i = bisect_left(self._levels, p)
        return self._levels[i - 1] if i else None

    def levels(self) -> tuple[Price, ...]:
        """Return every valid price, ascending."""
        return self._levels

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PriceGrid) and self._ranges == other._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"[{format_dollars(a)}, {format_dollars(b)}] step {format_dollars(s)}" for a, b, s in self._ranges
        )
        return f"PriceGrid({parts})"


@lru_cache(maxsize=256)
def _cached_grid(key: tuple[tuple[Price, Price, Price], ...]) -> PriceGrid:
    """Share one PriceGrid per distinct price_ranges; thousands of markets use a handful of grids."""
    return PriceGrid(key)


class FeeRate(StrEnum):
    """Which side of a fill pays: the taker (crossed the book) or the maker (was resting)."""

    TAKER = "taker"
    MAKER = "maker"


# Rates as exact fractions (kalshi_api.md §6.1): taker 0.07; maker 0.0175 (= 0.25 x taker) on
# quadratic_with_maker_fees, 0.035 (= 0.5 x taker) on quadratic_with_combo_maker_fees, 0 on plain quadratic.
_TAKER_RATE = (7, 100)
_MAKER_RATES = {
    "quadratic": (0, 1),
    "quadratic_with_maker_fees": (7, 400),
    "quadratic_with_combo_maker_fees": (7, 200),
}


def _multiplier_ratio(multiplier: Decimal | int | str | float) -> tuple[int, int]:
    """Return a fee multiplier as an exact (numerator, denominator) pair."""
    if isinstance(multiplier, bool) or not isinstance(multiplier, Decimal | int | str | float):
        raise MoneyError(f"fee multiplier must be a number, got {multiplier!r} ({type(multiplier).__name__})")
    if isinstance(multiplier, Decimal) and not multiplier.is_finite():  # a signalling NaN cannot be hashed
        raise MoneyError(f"fee multiplier {multiplier!r} must be a finite number >= 0")
    # Keyed by type too: Decimal(0.1) == 0.1 as numbers, but the float must be read as the decimal "0.1".
    return _cached_multiplier_ratio(type(multiplier), multiplier)


@lru_cache(maxsize=64)
def _cached_multiplier_ratio(_kind: type, multiplier: Decimal | int | str | float) -> tuple[int, int]:
    """Convert a type-checked multiplier exactly; a series has one, so the cache stays tiny."""
    try:
        # The API sends a JSON number; going through str keeps 0.5 / 0.1 as the decimal the exchange meant.
        d = multiplier if isinstance(multiplier, Decimal) else Decimal(str(multiplier))
    except InvalidOperation as e:
        raise MoneyError(f"fee multiplier {multiplier!r} is not a number") from e
    if not d.is_finite() or d < 0:
        raise MoneyError(f"fee multiplier {multiplier!r} must be a finite number >= 0")
    return d.as_integer_ratio()


def fee(
    count: Count,
    price: Price,
    *,
    rate: FeeRate | Literal["taker", "maker"],
    fee_type: str,
    multiplier: Decimal | int | str | float,
    round_to: Literal["tick", "cent"] = "tick",
) -> Price:
    """Return the trade fee in ticks: ceil(multiplier x rate x C x P x (1 - P)) to $0.0001 (or $0.01)."""
    if fee_type == "flat":
        raise UnsupportedFeeTypeError(
            "fee_type 'flat' (the fee schedule's Specific Trading Fees Table) has unconfirmed values; "
            "refusing to guess a fee; skip this series"
        )
    if fee_type not in _MAKER_RATES:
        raise MoneyError(f"unknown fee_type {fee_type!r}; expected one of {[*_MAKER_RATES, 'flat']}")
    if rate == FeeRate.TAKER:
        rate_n, rate_d = _TAKER_RATE
    elif rate == FeeRate.MAKER:
        rate_n, rate_d = _MAKER_RATES[fee_type]
    else:
        raise MoneyError(f"fee rate must be 'taker' or 'maker', got {rate!r}")
    if not isinstance(count, int) or count < 0:
        raise MoneyError(f"fee count must be a non-negative int of 1/100 contracts, got {count!r}")
    if not isinstance(price, int) or not 0 < price < ONE_DOLLAR:
        raise MoneyError(f"fee price must be an int number of ticks in (0, $1), got {price!r}")
    mult_n, mult_d = _multiplier_ratio(multiplier)
    # In ticks: mult x rate x (count / 100) x (price / 1e4) x ((1e4 - price) / 1e4) x 1e4.
    num = mult_n * rate_n * count * price * (ONE_DOLLAR - price)
    den = mult_d * rate_d * ONE_CONTRACT * ONE_DOLLAR
    if round_to == "tick":
        return -(-num // den)
    if round_to == "cent":
        # Legacy / pre-2026 mode (kalshi_api.md §6.2): round up to the next whole cent.
        return -(-num // (den * 100)) * 100
    raise MoneyError(f"round_to must be 'tick' or 'cent', got {round_to!r}")


__all__ = [
    "ONE_CONTRACT",
    "ONE_DOLLAR",
    "Count",
    "FeeRate",
    "MoneyError",
    "Price",
    "PriceGrid",
    "RoundDir",
    "UnsupportedFeeTypeError",
    "complement",
    "cost",
    "fee",
    "format_count",
    "format_dollars",
    "leg_price",
    "parse_count",
    "parse_dollars",
]
