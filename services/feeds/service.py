"""The feeds service wiring: which inputs run, and how their events reach the bus and the database.

Delivery per subject (DESIGN §4): books and spot ticks go out on core NATS (the MD_BOOKS / MD_SPOT
streams capture them as well); market definitions, trades, weather and alerts are JetStream
publishes with their event id as `Nats-Msg-Id`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import subjects
from libs.common.bus import Bus
from libs.common.config import Mode, Settings
from libs.common.db import create_engine, session_factory
from libs.common.events import Event, PublicTrade
from libs.common.kalshi import KalshiWS
from libs.common.kalshi.factory import environment, rest_client, signer
from libs.common.logs import get_logger
from libs.common.money import parse_count
from libs.common.runtime import ServiceRuntime
from libs.common.simnet import SimEndpoints
from libs.common.stations import BY_SERIES
from services.feeds.books import BookFanout, DivergenceCheck, RestBookPoller, SnapshotSampler
from services.feeds.connections import Connection, KalshiLink, RestLink, serve_ws_status
from services.feeds.discovery import Discovery
from services.feeds.spot import BarBuilder, VenueFeed, bitstamp, coinbase, kraken
from services.feeds.spot import binance as binance_venue
from services.feeds.spot_store import store_bars
from services.feeds.wx import ENSEMBLE_URL, FORECAST_URL, NWS_URL, EnsemblePoller, ObservationPoller

log = get_logger(__name__)

CORE_PREFIXES = ("md.book.", "md.spot.")


def make_emit(bus: Bus) -> Callable[[str, Event], Awaitable[None]]:
    """Publish on core NATS for hot-path subjects, JetStream (deduplicated by id) for the rest."""

    async def emit(subject: str, event: Event) -> None:
        if subject.startswith(CORE_PREFIXES):
            await bus.publish(subject, event)
        else:
            await bus.publish_js(subject, event)

    return emit


def trade_event(frame: dict[str, Any], mode: Mode) -> PublicTrade | None:
    """A WS `trade` frame as a bus event (None for other frames)."""
    if frame.get("type") != "trade":
        return None
    from datetime import UTC, datetime

    from libs.common.kalshi.models import book_price, from_ms

    m = frame["msg"]
    ts = from_ms(int(m["ts_ms"])) if m.get("ts_ms") else datetime.now(UTC)  # ValueError beyond what datetime holds
    count = parse_count(m["count_fp"])
    if count == 0:
        raise ValueError("a trade of no contracts")
    return PublicTrade(id=f"trade:{m['trade_id']}", ts_event=ts, mode=mode, ticker=m["market_ticker"],
                       series_ticker=subjects.series_of(m["market_ticker"]), trade_id=m["trade_id"],
                       yes_price=book_price(m["yes_price_dollars"]), count=count,
                       taker_outcome_side=m.get("taker_outcome_side") or m.get("taker_side") or "yes")


def venue_urls(settings: Settings) -> dict[str, str | None]:
    """Crypto venue URLs: explicit settings, else the simulator's fakes in sim mode, else the real venues."""
    sim = SimEndpoints(settings.sim_host, settings.sim_base_port) \
        if settings.mode is Mode.SIM and settings.sim_base_port else None
    out: dict[str, str | None] = {}
    for venue in ("coinbase", "kraken", "bitstamp"):
        explicit = getattr(settings, f"{venue}_ws_url")
        out[venue] = explicit or (sim.venue_url(venue) if sim else None)
    out["binance"] = settings.binance_ws_url
    return out


async def run_feeds(rt: ServiceRuntime) -> None:
    """Wire every input of the feeds service and run until stopped."""
    s = rt.settings
    mode = s.mode
    emit = make_emit(rt.bus)
    stop = rt.stopping
    tasks: list[asyncio.Task[None]] = []
    db_url = s.database_url_value()
    engine = create_engine(db_url) if db_url else None
    sessions: async_sessionmaker[AsyncSession] | None = session_factory(engine) if engine else None

    rest = rest_client(s)
    key = signer(s)
    wake = asyncio.Event()  # set by a lifecycle message: run discovery now
    fanout = BookFanout(emit, mode=mode)
    tasks.append(asyncio.create_task(fanout.run(stop), name="book-fanout"))

    links: list[Connection] = []  # every connection, for `cmd.feeds.ws_status`
    if key is not None:
        link: KalshiLink | None = None

        def on_book(book: Any) -> None:
            if link is not None:
                link.seen()
            fanout.on_book(book)

        async def on_message(frame: dict[str, Any]) -> None:
            if link is not None:
                link.seen()
            ev = trade_event(frame, mode)
            if ev is not None:
                await emit(subjects.md_trade(ev.series_ticker, ev.ticker), ev)
            elif frame.get("type") == "market_lifecycle_v2":
                wake.set()

        ws = KalshiWS(environment(s), key, on_book=on_book, on_message=on_message)
        link = KalshiLink(ws)
        links.append(link)
        rt.freshness.expect("kalshi_ws", 120)
        books = ws.books

        async def track(tickers: list[str]) -> None:
            await ws.subscribe_books(tickers)

        await ws.subscribe("trade")
        await ws.subscribe("market_lifecycle_v2")
        tasks.append(asyncio.create_task(ws.run(stop), name="kalshi-ws"))

        async def ws_alive() -> None:
            # Quiet markets send no deltas for minutes; the connection's keepalive is what proves it lives.
            while not stop.is_set():
                if ws.connected.is_set():
                    rt.freshness.mark("kalshi_ws")
                await asyncio.sleep(5)

        tasks.append(asyncio.create_task(ws_alive(), name="kalshi-ws-alive"))
        divergence = DivergenceCheck(rest, books, emit, mode=mode, resnapshot=ws.resnapshot)
        tasks.append(asyncio.create_task(divergence.run(stop), name="divergence"))
    else:
        log.info("kalshi_no_keys_polling_books", env=rest.env.name)
        poller = RestBookPoller(rest, fanout, freshness=rt.freshness)
        books = poller.books
        links.append(RestLink(rest.env.rest_url, poller))

        async def track(tickers: list[str]) -> None:
            poller.track(tickers)

        tasks.append(asyncio.create_task(poller.run(stop), name="rest-books"))

    discovery = Discovery(rest, s.series_list(), emit, mode=mode, sessions=sessions, freshness=rt.freshness,
                          on_open=track)
    tasks.append(asyncio.create_task(discovery.run(stop, wake=wake), name="discovery"))
    if sessions is not None:
        sampler = SnapshotSampler(sessions, books, source="ws" if key is not None else "rest")
        tasks.append(asyncio.create_task(sampler.run(stop), name="snapshots"))

    # BTC spot venues and their 1-second bars.
    async def sink(bars: Any) -> None:
        if sessions is None:
            return
        async with sessions() as session, session.begin():
            await store_bars(session, bars)

    bars = BarBuilder(sink)

    async def spot_emit(subject: str, event: Event) -> None:
        await emit(subject, event)
        await bars.add(event)  # type: ignore[arg-type]

    urls = venue_urls(s)
    venues = [f(url) for f, url in ((coinbase, urls["coinbase"]), (kraken, urls["kraken"]),
                                    (bitstamp, urls["bitstamp"])) if url] if any(urls.values()) \
        else [coinbase(), kraken(), bitstamp()]
    if urls["binance"]:
        venues.append(binance_venue(urls["binance"]))
    for venue in venues:
        feed = VenueFeed(venue, spot_emit, mode=mode, freshness=rt.freshness)
        links.append(feed)
        tasks.append(asyncio.create_task(feed.run(stop), name=f"spot-{venue.name}"))
    tasks.append(asyncio.create_task(bars.run(stop), name="spot-bars"))
    await serve_ws_status(rt.bus, links, instance=s.instance)

    # Weather: ensembles and observations for the settlement stations of the configured weather series.
    wx_root = s.weather_root()
    http = httpx.AsyncClient(timeout=30, headers={"User-Agent": s.nws_user_agent})
    for series in s.series_list():
        station = BY_SERIES.get(series)
        if station is None:
            continue
        ens = EnsemblePoller(station, emit, mode=mode, client=http, sessions=sessions, freshness=rt.freshness,
                             ensemble_url=wx_root or ENSEMBLE_URL, forecast_url=wx_root or FORECAST_URL,
                             provider="sim" if wx_root else "open-meteo",
                             interval_s=60.0 if mode is Mode.SIM else 1800.0)
        obs = ObservationPoller(station, emit, mode=mode, client=http, nws_url=wx_root or NWS_URL,
                                user_agent=s.nws_user_agent, sessions=sessions, freshness=rt.freshness,
                                interval_s=60.0 if mode is Mode.SIM else 300.0)
        tasks.append(asyncio.create_task(ens.run(stop), name=f"ensemble-{station.city}"))
        tasks.append(asyncio.create_task(obs.run(stop), name=f"obs-{station.icao}"))

    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await rest.aclose()
    await http.aclose()
    if engine is not None:
        await engine.dispose()
