"""Unit tests for libs.common.money: parsing, formatting, tick grids, fees and cost rounding."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest

from libs.common.money import (
    ONE_CONTRACT,
    ONE_DOLLAR,
    FeeRate,
    MoneyError,
    PriceGrid,
    UnsupportedFeeTypeError,
    complement,
    cost,
    fee,
    format_count,
    format_dollars,
    parse_count,
    parse_dollars,
)

# price_ranges exactly as the API returns them (dollar strings) for the structures under test.
LINEAR_CENT = [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}]
DECI_CENT = [{"start": "0.0000", "end": "1.0000", "step": "0.0010"}]
TAPERED_DECI_CENT = [
    {"start": "0.0000", "end": "0.1000", "step": "0.0010"},
    {"start": "0.1000", "end": "0.9000", "step": "0.0100"},
    {"start": "0.9000", "end": "1.0000", "step": "0.0010"},
]
CENTER_DECI_EDGE_CENTI_CENT = [
    {"start": "0.0000", "end": "0.0100", "step": "0.0001"},
    {"start": "0.0100", "end": "0.9900", "step": "0.0010"},
    {"start": "0.9900", "end": "1.0000", "step": "0.0001"},
]


# --- constants and dollar strings -------------------------------------------------------------


def test_constants() -> None:
    assert ONE_DOLLAR == 10_000
    assert ONE_CONTRACT == 100
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("text", "ticks"),
    [
        ("0.42", 4200),
        ("0.4200", 4200),
        ("0.960", 9600),
        ("1.0000", 10_000),
        ("0.0001", 1),
        ("0", 0),
        ("7", 70_000),
        ("12.345600", 123_456),
        ("0.420000000000", 4200),
    ],
)
def test_parse_dollars_exact(text: str, ticks: int) -> None:
    assert parse_dollars(text) == ticks


@pytest.mark.parametrize(
    "bad", ["", "abc", "1e-3", "+0.5", " 0.42", "0.42 ", "0.42\n", ".5", "1.", "0,42", "0x10", "١.٥", "--1"]
)
def test_parse_dollars_rejects_malformed_strings(bad: str) -> None:
    with pytest.raises(MoneyError) as e:
        parse_dollars(bad, signed=True)
    assert repr(bad) in str(e.value)
    assert "expected a plain decimal string like '0.4200'" in str(e.value)


@pytest.mark.parametrize("bad", [None, 0.42, 1, Decimal("0.42"), b"0.42"])
def test_parse_dollars_rejects_non_strings(bad: object) -> None:
    with pytest.raises(MoneyError) as e:
        parse_dollars(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(e.value)
    assert "must be a string like '0.4200'" in str(e.value)


def test_parse_dollars_rejects_off_grid_without_rounding() -> None:
    with pytest.raises(MoneyError) as e:
        parse_dollars("0.42001")
    assert "'0.42001' is off-grid: expected a whole number of $0.0001" in str(e.value)
    assert "allow_round" in str(e.value)


def test_parse_dollars_explicit_rounding() -> None:
    assert parse_dollars("0.42001", allow_round="up") == 4201
    assert parse_dollars("0.42001", allow_round="down") == 4200
    assert parse_dollars("12.345678", allow_round="up") == 123_457
    assert parse_dollars("12.345678", allow_round="down") == 123_456
    # On-grid values are unchanged whichever direction is allowed.
    assert parse_dollars("12.345600", allow_round="up") == 123_456
    # Negative values round toward +inf for "up" and -inf for "down".
    assert parse_dollars("-1.234567", signed=True, allow_round="up") == -12_345
    assert parse_dollars("-1.234567", signed=True, allow_round="down") == -12_346
    assert parse_dollars("-0.00005", signed=True, allow_round="up") == 0
    assert parse_dollars("-0.00005", signed=True, allow_round="down") == -1


def test_parse_dollars_rejects_unknown_rounding_direction() -> None:
    with pytest.raises(MoneyError, match="allow_round must be 'up', 'down' or None, got 'nearest'"):
        parse_dollars("0.42", allow_round="nearest")  # type: ignore[arg-type]


def test_parse_dollars_signed() -> None:
    with pytest.raises(MoneyError) as e:
        parse_dollars("-1.5000")
    assert "negative dollar amount '-1.5000'" in str(e.value)
    assert "signed=True" in str(e.value)
    assert parse_dollars("-1.5000", signed=True) == -15_000
    assert parse_dollars("-0.0001", signed=True) == -1
    assert parse_dollars("2.5", signed=True) == 25_000


def test_format_dollars() -> None:
    assert format_dollars(4200) == "0.4200"
    assert format_dollars(4200, 2) == "0.42"
    assert format_dollars(4210, 3) == "0.421"
    assert format_dollars(10_000) == "1.0000"
    assert format_dollars(0) == "0.0000"
    assert format_dollars(1) == "0.0001"
    assert format_dollars(-15_000) == "-1.5000"
    assert format_dollars(-5) == "-0.0005"
    assert format_dollars(123_456_789) == "12345.6789"


def test_format_dollars_refuses_to_lose_precision() -> None:
    with pytest.raises(MoneyError, match="4201 ticks cannot be written with 2 decimals"):
        format_dollars(4201, 2)
    with pytest.raises(MoneyError, match="2 to 4 decimals, got decimals=5"):
        format_dollars(4200, 5)
    with pytest.raises(MoneyError, match="2 to 4 decimals, got decimals=1"):
        format_dollars(4000, 1)
    with pytest.raises(MoneyError, match=r"int number of \$0.0001 ticks, got 0.42"):
        format_dollars(0.42)  # type: ignore[arg-type]


def test_dollars_round_trip() -> None:
    for p in range(-20_000, 20_001, 7):
        assert parse_dollars(format_dollars(p), signed=True) == p
    for p in range(0, 20_001, 100):
        assert parse_dollars(format_dollars(p, 2)) == p


# --- counts -----------------------------------------------------------------------------------


def test_parse_count() -> None:
    assert parse_count("10.00") == 1000
    assert parse_count("2.5") == 250
    assert parse_count("1") == 100
    assert parse_count("0.01") == 1
    assert parse_count("1.000") == 100  # trailing zeros past 2 decimals are still exactly on the grid
    assert parse_count("-54.00", signed=True) == -5400


def test_parse_count_rejections() -> None:
    with pytest.raises(MoneyError, match=r"negative contract count '-54.00'.*signed=True"):
        parse_count("-54.00")
    with pytest.raises(
        MoneyError, match=r"contract count '1.001' is off-grid: expected a whole number of 0.01 contract"
    ):
        parse_count("1.001")
    for bad in ["", "1e2", "ten", "+1", "1 "]:
        with pytest.raises(MoneyError, match=r"expected a plain decimal string like '10.00'"):
            parse_count(bad)
    for bad_type in [None, 10, 2.5]:
        with pytest.raises(MoneyError, match=r"contract count must be a string like '10.00'"):
            parse_count(bad_type)  # type: ignore[arg-type]


def test_format_count_and_round_trip() -> None:
    assert format_count(1000) == "10.00"
    assert format_count(250) == "2.50"
    assert format_count(1) == "0.01"
    assert format_count(0) == "0.00"
    assert format_count(-5400) == "-54.00"
    with pytest.raises(MoneyError, match="count must be an int"):
        format_count(2.5)  # type: ignore[arg-type]
    for c in range(-1_000, 1_001, 3):
        assert parse_count(format_count(c), signed=True) == c


# --- helpers ----------------------------------------------------------------------------------


def test_complement() -> None:
    assert complement(4200) == 5800
    assert complement(1) == 9999
    assert complement(0) == ONE_DOLLAR
    assert complement(complement(1234)) == 1234
    with pytest.raises(MoneyError, match=r"outside \[0, \$1\]"):
        complement(10_001)
    with pytest.raises(MoneyError):
        complement(-1)


def test_cost() -> None:
    assert cost(100, 4200, rounding="exact") == 4200  # 1 contract at $0.42
    assert cost(1000, 4200, rounding="exact") == 42_000
    assert cost(250, 4200, rounding="exact") == 10_500
    # 2.50 contracts at $0.4201 = $1.05025: not a whole tick.
    with pytest.raises(MoneyError, match=r"2.50 contracts at 0.4201 is not a whole number"):
        cost(250, 4201, rounding="exact")
    assert cost(250, 4201, rounding="up") == 10_503
    assert cost(250, 4201, rounding="down") == 10_502
    assert cost(-250, 4201, rounding="up") == -10_502
    assert cost(-250, 4201, rounding="down") == -10_503
    with pytest.raises(MoneyError, match="rounding must be"):
        cost(100, 4200, rounding="nearest")  # type: ignore[arg-type]


# --- tick grids -------------------------------------------------------------------------------


def test_linear_cent_grid() -> None:
    g = PriceGrid.linear_cent()
    assert g.levels() == tuple(range(100, 10_000, 100))
    assert len(g.levels()) == 99
    assert g.is_valid(4200)
    assert not g.is_valid(4210)
    assert not g.is_valid(0)
    assert not g.is_valid(10_000)
    assert not g.is_valid(-100)
    assert not g.is_valid(4200.0)  # type: ignore[arg-type]
    assert PriceGrid.from_api(LINEAR_CENT) == g
    assert PriceGrid.from_api(LINEAR_CENT) is g  # grids are shared between markets


def test_deci_cent_grid() -> None:
    g = PriceGrid.from_api(DECI_CENT)
    assert len(g.levels()) == 999
    assert g.levels()[0] == 10 and g.levels()[-1] == 9990
    assert g.is_valid(4210)
    assert not g.is_valid(4215)
    assert g.round_down(4215) == 4210
    assert g.round_up(4215) == 4220
    assert g != PriceGrid.linear_cent()


def test_tapered_deci_cent_grid_boundaries() -> None:
    g = PriceGrid.from_api(TAPERED_DECI_CENT)
    assert g.is_valid(990)  # 0.099
    assert g.is_valid(1000)  # 0.10 is on both adjacent steps
    assert not g.is_valid(1050)  # 0.105
    assert g.is_valid(1100)
    assert not g.is_valid(8950)  # 0.895
    assert g.is_valid(9000)
    assert g.is_valid(9010)  # 0.901
    assert g.is_valid(9990)  # 0.999
    assert not g.is_valid(9995)
    assert all(g.is_valid(c) for c in range(100, 10_000, 100))  # whole cents valid everywhere
    # 0.001..0.099 (99) + 0.10..0.90 (81) + 0.901..0.999 (99)
    assert len(g.levels()) == 279
    assert list(g.levels()) == sorted(set(g.levels()))


def test_tapered_rounding_and_neighbours() -> None:
    g = PriceGrid.from_api(TAPERED_DECI_CENT)
    assert g.round_down(1050) == 1000
    assert g.round_up(1050) == 1100
    assert g.round_down(1000) == 1000
    assert g.round_up(1000) == 1000
    assert g.round_down(995) == 990
    assert g.round_up(991) == 1000
    assert g.round_up(0) == 10
    assert g.round_up(-50) == 10
    assert g.round_down(5) is None
    assert g.round_down(0) is None
    assert g.round_up(9995) is None
    assert g.round_down(10_000) == 9990
    assert g.round_down(25_000) == 9990
    assert g.next_above(1000) == 1100
    assert g.next_below(1000) == 990
    assert g.next_above(990) == 1000
    assert g.next_above(1050) == 1100
    assert g.next_below(1050) == 1000
    assert g.next_above(8990) == 9000
    assert g.next_above(9000) == 9010
    assert g.next_below(10) is None
    assert g.next_above(9990) is None
    assert g.next_above(0) == 10
    assert g.next_below(10_000) == 9990


def test_center_deci_edge_centi_cent_grid() -> None:
    g = PriceGrid.from_api(CENTER_DECI_EDGE_CENTI_CENT)
    assert g.levels()[:3] == (1, 2, 3)
    assert g.is_valid(99)  # 0.0099
    assert g.is_valid(100)
    assert g.is_valid(110)
    assert not g.is_valid(105)  # 0.0105
    assert g.is_valid(9901)
    assert g.next_above(9890) == 9900
    assert g.next_above(9900) == 9901
    # 99 + 981 (0.010..0.990 step 0.001) + 99
    assert len(g.levels()) == 1179


def test_validate() -> None:
    g = PriceGrid.from_api(TAPERED_DECI_CENT)
    assert g.validate(4200) == 4200
    assert g.validate(990) == 990
    with pytest.raises(MoneyError) as e:
        g.validate(1050)
    assert str(e.value) == "price 0.1050 is off this market's tick grid; nearest valid: 0.1000 and 0.1100"
    with pytest.raises(MoneyError, match=r"price 0.0000 is outside \(0, \$1\)"):
        g.validate(0)
    with pytest.raises(MoneyError, match=r"price 1.0000 is outside \(0, \$1\)"):
        g.validate(10_000)
    with pytest.raises(MoneyError, match=r"int number of \$0.0001 ticks, got 0.42"):
        g.validate(0.42)  # type: ignore[arg-type]


def test_grid_levels_match_brute_force() -> None:
    # Independent check of every structure: a level is valid iff some range contains it on its step.
    for ranges in (LINEAR_CENT, DECI_CENT, TAPERED_DECI_CENT, CENTER_DECI_EDGE_CENTI_CENT):
        g = PriceGrid.from_api(ranges)
        spans = [[int(Fraction(r[k]) * ONE_DOLLAR) for k in ("start", "end", "step")] for r in ranges]
        expected = [p for p in range(1, ONE_DOLLAR) if any(a <= p <= b and (p - a) % s == 0 for a, b, s in spans)]
        assert list(g.levels()) == expected


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ([], "price_ranges is empty"),
        ([{"start": "0.0000", "end": "1.0000", "step": "0.0000"}], "step must be positive"),
        ([{"start": "0.5000", "end": "0.5000", "step": "0.0100"}], "start must be below end"),
        (
            [
                {"start": "0.0000", "end": "0.5000", "step": "0.0100"},
                {"start": "0.6000", "end": "1.0000", "step": "0.0100"},
            ],
            "not contiguous: one range ends at 0.5000 but the next starts at 0.6000",
        ),
        (
            [
                {"start": "0.0000", "end": "0.6000", "step": "0.0100"},
                {"start": "0.5000", "end": "1.0000", "step": "0.0100"},
            ],
            "not contiguous",
        ),
        ([{"start": "0.0000", "end": "0.9000", "step": "0.0100"}], r"expected exactly \[0.0000, 1.0000\]"),
        ([{"start": "0.0000", "end": "2.0000", "step": "0.0100"}], r"reaches outside \[\$0, \$1\]"),
        ([{"start": "0.0000", "end": "1.0000"}], r"price_ranges\[0\] must have 'start', 'end' and 'step'"),
        ([{"start": "0.0000", "end": "1.0000", "step": "0.00005"}], r"price_ranges\[0\]: .*off-grid"),
        ([{"start": "0.0000", "end": "1.0000", "step": 0.01}], r"price_ranges\[0\]: .*must be a string"),
        ([{"start": "0.0000", "end": "1.0000", "step": "-0.0100"}], r"price_ranges\[0\]: negative"),
        (None, "must be a list"),
        ("0.01", "must be a list"),
    ],
)
def test_from_api_rejects_bad_ranges(ranges: object, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        PriceGrid.from_api(ranges)  # type: ignore[arg-type]


def test_from_api_accepts_ranges_in_any_order() -> None:
    g = PriceGrid.from_api(list(reversed(TAPERED_DECI_CENT)))
    assert g == PriceGrid.from_api(TAPERED_DECI_CENT)
    assert "step 0.0100" in repr(g)


# --- fees -------------------------------------------------------------------------------------


def test_fee_table() -> None:
    q, qm, qc = "quadratic", "quadratic_with_maker_fees", "quadratic_with_combo_maker_fees"
    # 100 contracts at $0.50, taker: 0.07 x 100 x 0.25 = $1.75 exactly.
    assert fee(10_000, 5000, rate="taker", fee_type=q, multiplier=1) == 17_500
    # 1 contract at $0.55: 0.07 x 0.55 x 0.45 = 0.017325 -> $0.0174.
    assert fee(100, 5500, rate="taker", fee_type=q, multiplier=1) == 174
    # 1 contract at $0.01: 0.07 x 0.01 x 0.99 = 0.000693 -> $0.0007.
    assert fee(100, 100, rate="taker", fee_type=q, multiplier=1) == 7
    # Makers pay nothing on plain quadratic series.
    assert fee(10_000, 5000, rate="maker", fee_type=q, multiplier=1) == 0
    # Maker 0.0175 x 100 x 0.25 = $0.4375; combo maker 0.035 -> $0.875.
    assert fee(10_000, 5000, rate="maker", fee_type=qm, multiplier=1) == 4375
    assert fee(10_000, 5000, rate=FeeRate.MAKER, fee_type=qc, multiplier=1) == 8750
    # Taker rate does not depend on the maker variant.
    assert fee(10_000, 5000, rate=FeeRate.TAKER, fee_type=qm, multiplier=1) == 17_500
    # 2.50 contracts at $0.50: 0.07 x 2.5 x 0.25 = 0.04375 -> $0.0438.
    assert fee(250, 5000, rate="taker", fee_type=q, multiplier=1) == 438
    assert fee(0, 5000, rate="taker", fee_type=q, multiplier=1) == 0


@pytest.mark.parametrize("half", [0.5, "0.5", Decimal("0.5"), Decimal("0.50")])
def test_fee_multiplier_half(half: object) -> None:
    assert fee(10_000, 5000, rate="taker", fee_type="quadratic", multiplier=half) == 8750  # type: ignore[arg-type]


@pytest.mark.parametrize("zero", [0, 0.0, "0", Decimal(0)])
def test_fee_multiplier_zero(zero: object) -> None:
    assert fee(10_000, 5000, rate="taker", fee_type="quadratic", multiplier=zero) == 0  # type: ignore[arg-type]


def test_fee_float_multiplier_is_read_as_its_decimal() -> None:
    # 0.1 x 1.75 = 0.175 exactly; the binary float 0.1 is a hair above 0.1 and would ceil to 1751.
    assert fee(10_000, 5000, rate="taker", fee_type="quadratic", multiplier=0.1) == 1750


def test_fee_cent_rounding_legacy_mode() -> None:
    assert fee(100, 5500, rate="taker", fee_type="quadratic", multiplier=1, round_to="cent") == 200
    assert fee(10_000, 5000, rate="taker", fee_type="quadratic", multiplier=1, round_to="cent") == 17_500
    assert fee(100, 100, rate="taker", fee_type="quadratic", multiplier=1, round_to="cent") == 100
    with pytest.raises(MoneyError, match="round_to must be 'tick' or 'cent'"):
        fee(100, 100, rate="taker", fee_type="quadratic", multiplier=1, round_to="dollar")  # type: ignore[arg-type]


def test_fee_flat_is_unsupported() -> None:
    with pytest.raises(UnsupportedFeeTypeError, match=r"fee_type 'flat'.*unconfirmed") as e:
        fee(100, 5000, rate="taker", fee_type="flat", multiplier=1)
    assert isinstance(e.value, MoneyError)
    assert isinstance(e.value, NotImplementedError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fee_type": "cubic"}, "unknown fee_type 'cubic'"),
        ({"rate": "both"}, "fee rate must be 'taker' or 'maker', got 'both'"),
        ({"multiplier": -1}, "must be a finite number >= 0"),
        ({"multiplier": "nan"}, "must be a finite number >= 0"),
        ({"multiplier": float("inf")}, "must be a finite number >= 0"),
        ({"multiplier": Decimal("sNaN")}, "must be a finite number >= 0"),
        ({"multiplier": "half"}, "fee multiplier 'half' is not a number"),
        ({"multiplier": True}, "fee multiplier must be a number, got True"),
        ({"multiplier": None}, "fee multiplier must be a number, got None"),
        ({"price": 0}, r"fee price must be an int number of ticks in \(0, \$1\), got 0"),
        ({"price": 10_000}, "fee price must be"),
        ({"price": 0.5}, "fee price must be"),
        ({"count": -100}, "fee count must be a non-negative int"),
        ({"count": 1.5}, "fee count must be a non-negative int"),
    ],
)
def test_fee_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "count": 100,
        "price": 5000,
        "rate": "taker",
        "fee_type": "quadratic",
        "multiplier": 1,
    }
    args.update(kwargs)
    with pytest.raises(MoneyError, match=message):
        fee(**args)  # type: ignore[arg-type]


def test_fee_property_ceil_to_tick() -> None:
    # Exact value computed independently from the dollar strings, in Fraction arithmetic.
    rng = random.Random(20260901)
    rates = {
        ("taker", "quadratic"): Fraction("0.07"),
        ("taker", "quadratic_with_maker_fees"): Fraction("0.07"),
        ("maker", "quadratic"): Fraction(0),
        ("maker", "quadratic_with_maker_fees"): Fraction("0.0175"),
        ("maker", "quadratic_with_combo_maker_fees"): Fraction("0.035"),
    }
    multipliers = [1, 0.5, "0.25", Decimal("1.5"), 0, 2]
    tick = Fraction(1, ONE_DOLLAR)
    exact_hits = 0
    for _ in range(3000):
        count = rng.randint(0, 500_000)
        price = rng.randint(1, ONE_DOLLAR - 1)
        (rate, fee_type), r = rng.choice(list(rates.items()))
        mult = rng.choice(multipliers)
        got = fee(count, price, rate=rate, fee_type=fee_type, multiplier=mult)  # type: ignore[arg-type]
        p = Fraction(format_dollars(price))
        exact = Fraction(str(mult)) * r * Fraction(format_count(count)) * p * (1 - p)
        assert isinstance(got, int)
        assert exact <= got * tick < exact + tick, (count, price, rate, fee_type, mult)
        exact_hits += exact == got * tick
    assert exact_hits > 0  # the loop also exercised the no-rounding branch
