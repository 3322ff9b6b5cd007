"""A small hand-built simulated world and a running SimExchange with keyed users, for client and feed tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from libs.common.kalshi import KalshiRest, Signer, sim_environment
from libs.common.kalshi.rest import Environment
from libs.common.matching.engine import MatchingEngine
from libs.common.money import PriceGrid
from services.sim.catalog import Catalog, EventInfo, MarketInfo, SeriesInfo
from services.sim.server import SimExchange
from tests.kit.keys import public_pem, rsa_key

SERIES = "KXHIGHNY"
EVENT = "KXHIGHNY-26NOV23"
BRACKETS = [("T50", None, Decimal(50)), ("B50.5", Decimal(50), Decimal(51)), ("B52.5", Decimal(52), Decimal(53)),
            ("B54.5", Decimal(54), Decimal(55)), ("B56.5", Decimal(56), Decimal(57)), ("T57", Decimal(57), None)]
TICKERS = [f"{EVENT}-{suffix}" for suffix, _, _ in BRACKETS]
BTC_SERIES = "KXBTCD"
BTC_EVENT = "KXBTCD-26NOV2317"
BTC_TICKERS = [f"{BTC_EVENT}-T{k}" for k in ("78499.99", "78999.99", "79499.99")]
FUNDS = 10_000 * 10_000  # $10,000
BTC_SHARD = 2  # the exchange index the BTC markets live on (weather: 0)


@dataclass
class HandWorld:
    """Engine + catalog + clock: what SimExchange needs."""

    engine: MatchingEngine
    catalog: Catalog
    clock: Any


def hand_world(*, fee_type: str = "quadratic", now: datetime | None = None) -> HandWorld:
    """One NYC weather event (six markets, shard 0) and three BTC strikes (shard 2), all active, whole-cent grid."""
    now = now or datetime.now(UTC)
    engine = MatchingEngine(lambda: datetime.now(UTC))
    catalog = Catalog()
    wx = SeriesInfo(ticker=SERIES, title="Highest temperature in NYC", category="Climate and Weather",
                    frequency="daily", fee_type=fee_type)
    # Crypto lives on shard 2, as Kalshi's new crypto events do since 2026-08-24 (kalshi_api.md §3.12).
    btc = SeriesInfo(ticker=BTC_SERIES, title="Bitcoin above", category="Crypto", frequency="hourly",
                     exchange_index=BTC_SHARD)
    catalog.add_series(wx)
    catalog.add_series(btc)
    catalog.add_event(EventInfo(event_ticker=EVENT, series_ticker=SERIES, title="NYC high Nov 23"))
    catalog.add_event(EventInfo(event_ticker=BTC_EVENT, series_ticker=BTC_SERIES, title="BTC at 5pm",
                                mutually_exclusive=False))
    specs: list[tuple[str, str, str, Decimal | None, Decimal | None, SeriesInfo]] = []
    for (_suffix, floor, cap), ticker in zip(BRACKETS, TICKERS, strict=True):
        kind = "less" if floor is None else "greater" if cap is None else "between"
        specs.append((ticker, EVENT, kind, floor, cap, wx))
    for ticker in BTC_TICKERS:
        specs.append((ticker, BTC_EVENT, "greater", Decimal(ticker.rsplit("-T", 1)[1]), None, btc))
    for ticker, event, kind, floor, cap, series in specs:
        info = MarketInfo(ticker=ticker, event_ticker=event, series_ticker=series.ticker, title=ticker,
                          yes_sub_title=ticker.rsplit("-", 1)[1], no_sub_title=ticker.rsplit("-", 1)[1],
                          strike_type=kind, floor_strike=floor, cap_strike=cap,
                          open_time=now - timedelta(hours=1), close_time=now + timedelta(days=1),
                          expected_expiration_time=now + timedelta(days=1, hours=14),
                          latest_expiration_time=now + timedelta(days=8), grid=PriceGrid.linear_cent())
        catalog.add_market(info)
        engine.add_market(info.spec(series))
        engine.set_status(ticker, "active")
    return HandWorld(engine, catalog, lambda: datetime.now(UTC))


@dataclass
class SimRig:
    """A running exchange and clients for named users."""

    exchange: SimExchange
    env: Environment
    clients: dict[str, KalshiRest] = field(default_factory=dict)

    def signer(self, user: str) -> Signer:
        """The signer registered for `user`."""
        return Signer(f"key-{user}", rsa_key(user))

    def client(self, user: str, **kw: Any) -> KalshiRest:
        """A REST client authenticated as `user` (created and funded on first use)."""
        if user not in self.clients:
            self.exchange.register_key(f"key-{user}", public_pem(rsa_key(user)), user, balance=FUNDS)
            self.clients[user] = KalshiRest(self.env, self.signer(user), **kw)
        return self.clients[user]


@asynccontextmanager
async def sim_rig(world: Any | None = None, **exchange_kw: Any) -> AsyncIterator[SimRig]:
    """Start a SimExchange on a free port around `world` (default: `hand_world()`)."""
    exchange = SimExchange(world or hand_world(), **exchange_kw)
    await exchange.start()
    rig = SimRig(exchange, sim_environment(exchange.rest_url, exchange.ws_url))
    try:
        yield rig
    finally:
        for c in rig.clients.values():
            await c.aclose()
        await exchange.stop()


def coid() -> str:
    """A fresh client order id."""
    return uuid.uuid4().hex
