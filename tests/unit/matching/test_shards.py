"""Collateral per exchange shard (kalshi_api.md §3.12): a shard's cash backs only that shard's orders."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from libs.common.matching.engine import MatchingEngine
from libs.common.matching.types import ExchangeError, MarketSpec, OrderRequest
from libs.common.money import ONE_DOLLAR, PriceGrid

WX, BTC = "KXHIGHNY-26NOV23-B52.5", "KXBTCD-26NOV2317-T78499.99"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def engine() -> MatchingEngine:
    e = MatchingEngine(lambda: NOW)
    e.add_market(MarketSpec(WX, "KXHIGHNY-26NOV23", "KXHIGHNY", PriceGrid.linear_cent()))
    e.add_market(MarketSpec(BTC, "KXBTCD-26NOV2317", "KXBTCD", PriceGrid.linear_cent(), exchange_index=2))
    return e


def bid(ticker: str, price: int, count: int, tif: str = "good_till_canceled") -> OrderRequest:
    return OrderRequest(ticker, "bid", price, count, tif, "taker_at_cross")  # type: ignore[arg-type]


def test_an_order_reserves_and_pays_on_its_markets_shard_only() -> None:
    e = engine()
    e.open_account("a", 100 * ONE_DOLLAR, exchange_index=0)
    e.open_account("a", 10 * ONE_DOLLAR, exchange_index=2)
    assert e.balances("a") == {0: 100 * ONE_DOLLAR, 2: 10 * ONE_DOLLAR}
    e.place("a", bid(BTC, 4_000, 1_000))  # 10 contracts at 40c (+ taker fee held)
    assert e.balance("a", 0) == 100 * ONE_DOLLAR and e.balance("a", 2) < 6 * ONE_DOLLAR
    with pytest.raises(ExchangeError) as low:  # $10 more than shard 2 holds; shard 0's $100 cannot back it
        e.place("a", bid(BTC, 5_000, 2_000))
    assert low.value.code == "available_balance_too_low"
    e.place("a", bid(WX, 5_000, 2_000))  # the same order on a shard-0 market is fine
    assert e.balance("a") == e.balance("a", 0) + e.balance("a", 2)


def test_fills_and_settlement_move_cash_on_the_markets_shard() -> None:
    e = engine()
    for user in ("a", "b"):
        e.open_account(user, 50 * ONE_DOLLAR, exchange_index=0)
        e.open_account(user, 50 * ONE_DOLLAR, exchange_index=2)
    e.place("a", bid(BTC, 4_000, 1_000))
    e.place("b", OrderRequest(BTC, "ask", 4_000, 1_000, "immediate_or_cancel", "taker_at_cross"))
    assert e.cash("a", 0) == e.cash("b", 0) == 50 * ONE_DOLLAR
    assert e.cash("a", 2) == 46 * ONE_DOLLAR and e.cash("b", 2) < 44 * ONE_DOLLAR  # $4 and $6 + fee
    assert e.portfolio_value("a", 0) == 0 and e.portfolio_value("a", 2) == e.portfolio_value("a")
    e.set_status(BTC, "closed")
    e.settle(BTC, "yes")
    assert e.cash("a", 2) == 56 * ONE_DOLLAR and e.cash("a", 0) == 50 * ONE_DOLLAR


def test_a_pooled_account_backs_every_shard_and_cannot_be_split_later() -> None:
    e = engine()
    e.open_account("mm", 100 * ONE_DOLLAR)
    e.place("mm", bid(BTC, 4_000, 1_000))
    e.place("mm", bid(WX, 4_000, 1_000))
    assert list(e.balances("mm")) == [0]
    with pytest.raises(ValueError, match="pooled"):
        e.open_account("mm", ONE_DOLLAR, exchange_index=2)
    e.open_account("a", ONE_DOLLAR, exchange_index=2)
    with pytest.raises(ValueError, match="per shard"):
        e.open_account("a", ONE_DOLLAR)
