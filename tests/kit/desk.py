"""Running executor replicas against a SimExchange over real NATS + PostgreSQL, and feeding them."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode, Settings, load_settings
from libs.common.db import create_engine, session_factory
from libs.common.events import BookUpdate, MarketDefinition, PriceRange, Signal
from libs.common.kalshi import KalshiWS
from services.executor.broker import KalshiUpdates
from services.executor.service import Executor
from tests.kit.sim import SimRig

_seq = itertools.count(1)


def desk_settings(**kw: Any) -> Settings:
    """Sim-mode settings with generous caps unless the test says otherwise."""
    base: dict[str, Any] = {"mode": Mode.SIM, "instance": "test", "min_edge": 0.02, "taker_min_edge": 0.2,
                            "confidence_floor": 0.1, "kelly_fraction": 0.25, "max_order_usd": "40",
                            "max_market_usd": "100", "max_event_usd": "200", "max_open_orders": 50,
                            "reprice_after_s": 3600}
    base.update(kw)
    return load_settings(**base)


async def publish_definitions(bus: Bus, rig: SimRig, tickers: list[str]) -> None:
    """What feeds publishes for each market: its definition (strikes, grid, fees, shard)."""
    for t in tickers:
        m = rig.exchange.catalog.markets[t]
        series = rig.exchange.catalog.series[m.series_ticker]
        await bus.publish_js(subjects.md_market(m.series_ticker, t), MarketDefinition(
            ts_event=datetime.now(UTC), mode=Mode.SIM, ticker=t, event_ticker=m.event_ticker,
            series_ticker=m.series_ticker, status="active", strike_type=m.strike_type, floor_strike=m.floor_strike,
            cap_strike=m.cap_strike, close_time=m.close_time,
            price_ranges=tuple(PriceRange(start=a, end=b, step=c) for a, b, c in m.grid.ranges),
            fee_type=series.fee_type, fee_multiplier=series.fee_multiplier, exchange_index=m.shard))


async def publish_book(bus: Bus, rig: SimRig, ticker: str) -> BookUpdate:
    """The exchange's current book of `ticker` on md.book (core NATS, as feeds does on the hot path)."""
    yes, no = rig.exchange.engine.book(ticker)
    m = rig.exchange.catalog.markets[ticker]
    b = BookUpdate(ts_event=datetime.now(UTC), mode=Mode.SIM, ticker=ticker, series_ticker=m.series_ticker,
                   seq=next(_seq), yes_bids=tuple(yes), no_bids=tuple(no))
    await bus.publish(subjects.md_book(m.series_ticker, ticker), b)
    return b


def signal(ticker: str, event: str, series: str, p: float, action: str = "buy_yes", *, sid: str | None = None,
           valid_s: float = 60, confidence: float = 0.9, family: str = "weather") -> Signal:
    """A signal as the signals service would emit it."""
    return Signal(id=sid or f"sig-{ticker}-{next(_seq)}", ts_event=datetime.now(UTC), mode=Mode.SIM, family=family,
                  series_ticker=series, event_ticker=event, ticker=ticker, model="test", model_version="1",
                  p_model=p, p_market=0.5, action=action, confidence=confidence,  # type: ignore[arg-type]
                  valid_until=datetime.now(UTC) + timedelta(seconds=valid_s))


async def send_signal(bus: Bus, s: Signal) -> None:
    await bus.publish_js(subjects.sig(s.family, s.series_ticker, s.ticker), s)


@asynccontextmanager
async def executor(rig: SimRig, nats_url: str, db_url: str, *, user: str = "desk", settings: Settings | None = None,
                   private_ws: bool = True, broker: Any = None, **kw: Any) -> AsyncIterator[Executor]:
    """One started executor replica trading as `user` on the sim (REST + private WS unless told not to);
    `broker` replaces the user's REST client (a fake at the venue seam)."""
    settings = settings or desk_settings()
    client = rig.client(user) if broker is None else broker
    bus = await Bus.connect(nats_url, service="executor", mode=settings.mode)
    await bus.provision()
    engine = create_engine(db_url)
    updates = KalshiUpdates(KalshiWS(rig.env, rig.signer(user))) if private_ws else None
    ex = Executor(settings, bus, session_factory(engine), client, updates=updates, loop_interval_s=0.2, **kw)
    try:
        await ex.start()
        yield ex
    finally:
        await ex.stop()
        await bus.close()
        await engine.dispose()


async def signals_settled(bus: Bus) -> bool:
    """The executors' signal consumer has nothing left to deliver and nothing unacknowledged."""
    info = await bus.js.consumer_info(bus.stream("SIGNALS"), "executor")
    return info.num_pending == 0 and info.num_ack_pending == 0


def paper_executor(settings: Settings, bus: Bus, engine: Any) -> Executor:
    """An executor replica whose venue is its own paper broker (unstarted)."""
    from services.executor.paper import PaperBroker

    paper = PaperBroker(lambda: datetime.now(UTC), 10**7, freshness=settings.freshness)
    return Executor(settings, bus, session_factory(engine), paper, updates=paper, loop_interval_s=0.2)


__all__ = [
    "desk_settings",
    "executor",
    "paper_executor",
    "publish_book",
    "publish_definitions",
    "send_signal",
    "signal",
    "signals_settled",
]
