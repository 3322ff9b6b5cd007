"""The pure checks of the Kalshi contract tripwire (libs/common/kalshi/contract.py)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.common.kalshi.contract import (
    check_fee_changes,
    check_market,
    check_price_ranges,
    check_series,
    check_status,
    fee_fingerprint,
)

# Shaped like a real KXHIGHNY market (kalshi_api.md §3.4, §9.1), trimmed to what the check reads.
MARKET: dict[str, Any] = {
    "ticker": "KXHIGHNY-26OCT04-B63.5", "event_ticker": "KXHIGHNY-26OCT04", "status": "active", "result": "",
    "yes_bid_dollars": "0.4200", "yes_ask_dollars": "0.4500", "no_bid_dollars": "0.5500", "no_ask_dollars": "0.5800",
    "last_price_dollars": "0.4300", "yes_bid_size_fp": "13.00", "yes_ask_size_fp": "17.00", "volume_fp": "1200.00",
    "open_interest_fp": "800.00", "open_time": "2026-10-03T14:00:00Z", "close_time": "2026-10-05T05:00:00Z",
    "floor_strike": 63, "cap_strike": 64, "settlement_bounds_type": "default",
    "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}],
}
SERIES: dict[str, Any] = {"ticker": "KXHIGHNY", "fee_type": "quadratic", "fee_multiplier": 1}


def test_a_documented_market_status_and_series_pass() -> None:
    assert check_market(MARKET) == []
    assert check_series(SERIES) == []
    assert check_status({"exchange_active": True, "trading_active": False}) == []
    assert check_fee_changes({"series_fee_change_arr": []}) == []


@pytest.mark.parametrize(("key", "value", "says"), [
    ("yes_bid_dollars", "42", "4 decimals"),  # cents instead of dollars
    ("yes_ask_dollars", "42.0000", "outside $0–$1"),
    ("last_price_dollars", 0.43, "4 decimals"),
    ("volume_fp", "1200", "2 decimals"),
    ("open_interest_fp", 800, "2 decimals"),
    ("status", "open", "status"),
    ("result", "void", "result"),
    ("close_time", 1_790_000_000, "RFC3339"),
    ("floor_strike", "63", "number"),
    ("settlement_bounds_type", None, "settlement_bounds_type"),
    ("price_ranges", [], "price_ranges"),
    ("price_ranges", [{"start": "0.0000", "end": "0.9000", "step": "0.0100"}], "cover"),
    ("price_ranges", [{"start": "0", "end": "1", "step": "0.01"}], "4 decimals"),
])
def test_a_changed_market_field_is_reported(key: str, value: Any, says: str) -> None:
    problems = check_market({**MARKET, key: value})
    assert problems and says in " ".join(problems) and key.split("_")[0] in " ".join(problems)


def test_a_missing_field_and_a_settlement_floor_are_reported() -> None:
    missing = {k: v for k, v in MARKET.items() if k != "yes_bid_dollars"}
    assert any("yes_bid_dollars" in p for p in check_market(missing))
    floor = check_market({**MARKET, "settlement_bounds_type": "floor", "settlement_floor_dollars": "0.3000"})
    assert len(floor) == 1 and "floor" in floor[0]
    assert check_price_ranges([{"start": "0.0000", "end": "0.1000", "step": "0.0010"},
                               {"start": "0.1000", "end": "1.0000", "step": "0.0100"}]) == []


@pytest.mark.parametrize(("series", "says"), [
    ({"fee_type": None}, "fee_type"),
    ({"fee_type": "quadratic_v2"}, "not one of"),
    ({"fee_type": "flat"}, "does not price"),
    ({"fee_multiplier": "1"}, "fee_multiplier"),
    ({"fee_multiplier": -1}, "fee_multiplier"),
    ({"fee_multiplier": True}, "fee_multiplier"),
])
def test_fee_terms_the_desk_cannot_price_are_reported(series: dict[str, Any], says: str) -> None:
    problems = check_series({**SERIES, **series})
    assert problems and says in problems[0]


def test_status_and_fee_change_shapes() -> None:
    assert check_status({"exchange_active": "true", "trading_active": True})
    assert check_status([])
    assert check_fee_changes({"series_fee_change_arr": [{"fee_type": "flat?", "fee_multiplier": 1}]})
    assert check_fee_changes({})


def test_the_fee_fingerprint_follows_the_schedule() -> None:
    changes = {"series_fee_change_arr": [{"id": "1", "series_ticker": "KXHIGHNY", "fee_type": "quadratic",
                                          "fee_multiplier": 0.5, "scheduled_ts": "2026-11-01T00:00:00Z"}]}
    a, schedule = fee_fingerprint(SERIES, changes)
    assert a == fee_fingerprint(dict(SERIES), changes)[0] and schedule["fee_type"] == "quadratic"
    assert a != fee_fingerprint({**SERIES, "fee_multiplier": 0.5}, changes)[0]
    assert a != fee_fingerprint(SERIES, {"series_fee_change_arr": []})[0]
