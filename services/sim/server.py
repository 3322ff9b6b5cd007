"""A Kalshi-compatible exchange over real sockets: REST v2 and WebSocket v2 in front of a World.

`SimExchange(world)` serves the real paths under `/trade-api/v2` and `/trade-api/ws/v2` with the
real JSON shapes (render.py), checks signed requests (auth.py), optionally enforces token-bucket
rate limits (ratelimit.py) and injects faults (faults.py). The World owns the matching engine,
the catalog and the clock; the exchange only translates. Everything runs on one asyncio loop, so
engine calls and the events they emit never interleave.

Shards (kalshi_api.md §3.12). Every market lives on its event's exchange index (KXBTC* on 2, the rest
on 0) and every order call is routed as production routes it: an explicit `exchange_index` goes to
that shard, `-1` to the shard of the market the call names, and an omitted index to the named market's
shard (`auto_route_by_ticker`, the reference's reading) or to shard 0 (the sharding guide of
2026-08-11: "If omitted: defaults to 0"). A call that names no market and no index goes to shard 0.
A shard that does not hold the order (or the market) answers 404 `not_found`, as that matching engine
would: a cancel of a shard-2 order sent without its route fails; it does not find the order anyway.
Collateral is kept per shard (the engine's wallets, funded by `fund`) and reported in
`balance_breakdown`; `balance` without an index is the account's total. Positions, fills and
settlements cover every shard unless an `exchange_index` narrows them, and so does the order list
under the reference's reading (under the guide's it is shard 0's) — UNCONFIRMED on the real API; the
desk asks each shard by name where it matters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web

from libs.common.logs import get_logger
from libs.common.matching.engine import MatchingEngine
from libs.common.matching.types import (
    EngineEvent,
    ExchangeError,
    Fill,
    MarketStatusChange,
    OrderRequest,
    PlaceResult,
    PositionUpdate,
    Trade,
)
from libs.common.matching.types import Order as EngineOrder
from libs.common.money import MoneyError, parse_count, parse_dollars
from services.sim import render
from services.sim.auth import AuthError, KeyRing, wall_clock_ms
from services.sim.catalog import Catalog, EventInfo, MarketInfo, SeriesInfo
from services.sim.faults import Faults, break_contract
from services.sim.ratelimit import TOO_MANY_REQUESTS_BODY, RateLimiter, Tier, classify
from services.sim.render import Json, MarketStats, Top
from services.sim.ws import Hub

log = get_logger(__name__)

REST_PREFIX = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"
_AUTH_REQUIRED = (REST_PREFIX + "/portfolio", REST_PREFIX + "/account")
_BATCHED = REST_PREFIX + "/portfolio/events/orders/batched"
_USER = web.RequestKey("kdesk_sim_user", str)
_DAY = timedelta(days=1)
T = TypeVar("T")
# What /account/limits reports when no rate limit is enforced: a tier no client will hit.
_UNLIMITED = Tier("unlimited", 1_000_000, 1_000_000)
# The exchange indexes (kalshi_api.md §3.12): 0 default, 1 combos, 2 crypto, 3 tennis and baseball.
SHARDS: dict[int, str] = {0: "default", 1: "exotics", 2: "crypto", 3: "tennis and baseball"}
AUTO_ROUTE = -1  # `exchange_index: -1`: route by the market ticker the call names


class World(Protocol):
    """What the exchange needs from the simulated world (services/sim/world.py provides it)."""

    engine: MatchingEngine
    catalog: Catalog
    clock: Callable[[], datetime]


class Stepper(Protocol):
    """Something advanced once per background tick (BackgroundTraders)."""

    def step(self, n: int) -> Any: ...


def _bad(message: str) -> ExchangeError:
    return ExchangeError("invalid_parameters", message, status=400, details=message)


def _not_found(what: str) -> ExchangeError:
    return ExchangeError("not_found", "not found", status=404, details=what)


def _order_not_found(order_id: str) -> ExchangeError:
    # Word for word what the engine says of an order it does not know: another shard's engine does not.
    return ExchangeError("not_found", f"order {order_id} not found", status=404, details=order_id)


def _index_value(raw: object, where: str) -> int | None:
    """An `exchange_index` as sent (a query string or a JSON integer); None when absent."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = int(raw)
        except ValueError:
            raise _bad(f"{where}: exchange_index must be an integer, got {raw!r}") from None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _bad(f"{where}: exchange_index must be an integer, got {raw!r}")
    if raw != AUTO_ROUTE and raw not in SHARDS:
        raise _bad(f"{where}: exchange_index must be -1 (route by market) or one of {sorted(SHARDS)}, got {raw}")
    return raw


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, code: str, message: str, details: str = "") -> web.Response:
    return _json({"error": {"code": code, "message": message, "details": details}}, status)


# -- the tape: statistics the engine does not keep ----------------------------------------------

class Tape:
    """Per-market trade statistics and open interest, fed by engine events."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._stats: dict[str, MarketStats] = {}
        self._recent: dict[str, deque[tuple[datetime, int, int]]] = {}  # trades of the last 24 h
        self._positions: dict[str, dict[str, int]] = {}  # ticker -> user -> signed position
        self._user_volume: dict[tuple[str, str], int] = {}
        self._tops: dict[str, tuple[datetime, Top]] = {}

    def _get(self, ticker: str) -> MarketStats:
        s = self._stats.get(ticker)
        if s is None:
            s = self._stats[ticker] = MarketStats()
            self._recent[ticker] = deque()
        return s

    def add_trade(self, t: Trade) -> None:
        """Count one public trade."""
        s = self._get(t.ticker)
        s.last_price, s.last_size = t.yes_price, t.count
        s.volume += t.count
        s.dollar_volume += t.yes_price * t.count // 100
        self._recent[t.ticker].append((t.created_time, t.yes_price, t.count))

    def on_event(self, ev: EngineEvent) -> None:
        """Update statistics from an engine event."""
        if isinstance(ev, Trade):
            self.add_trade(ev)
        elif isinstance(ev, PositionUpdate):
            p = ev.position
            book = self._positions.setdefault(p.ticker, {})
            book[p.user_id] = p.position
            # Every YES contract outstanding has a NO contract on the other side: OI = sum of longs.
            self._get(p.ticker).open_interest = sum(v for v in book.values() if v > 0)
        elif isinstance(ev, MarketStatusChange):
            # `updated_time` is the last non-trading change (Market schema): status, not trades or book moves.
            s = self._get(ev.ticker)
            s.updated_time = ev.ts
            if ev.status == "determined" or (ev.status == "finalized" and s.determination_time is None):
                s.determination_time = ev.ts
            if ev.status == "finalized":
                s.settlement_time = ev.ts
        elif isinstance(ev, Fill):
            key = (ev.user_id, ev.ticker)
            self._user_volume[key] = self._user_volume.get(key, 0) + ev.count

    def stats(self, ticker: str) -> MarketStats:
        """Statistics of one market, with the 24 h window brought up to date."""
        s = self._get(ticker)
        recent = self._recent[ticker]
        cutoff = self.clock() - _DAY
        while recent and recent[0][0] <= cutoff:
            _, price, _ = recent.popleft()
            s.previous_price = price  # the latest trade older than a day is "the price a day ago"
        s.volume_24h = sum(c for _, _, c in recent)
        return s

    def user_volume(self, user_id: str, ticker: str) -> int:
        """Contracts a user traded in a market (as seen by this exchange)."""
        return self._user_volume.get((user_id, ticker), 0)

    def roll_top(self, ticker: str, top: Callable[[], Top], now: datetime) -> None:
        """Sample the top of book once a day; the previous sample is what "a day ago" reports."""
        seen = self._tops.get(ticker)
        if seen is None or now - seen[0] >= _DAY:
            if seen is not None:
                s = self._get(ticker)
                s.previous_yes_bid, s.previous_yes_ask = seen[1].yes_bid, seen[1].yes_ask
            self._tops[ticker] = (now, top())


# -- request helpers ----------------------------------------------------------------------------

def _q_int(request: web.Request, name: str, default: int | None, lo: int | None = None,
           hi: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer, got {raw!r}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _bad(f"{name} must be between {lo} and {hi}, got {v}")
    return v


def _q_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise _bad(f"{name} must be true or false, got {raw!r}")


def _q_list(request: web.Request, name: str) -> list[str]:
    """A list parameter, comma-joined or repeated (`?tickers=a,b` and `?tickers=a&tickers=b`)."""
    out: list[str] = []
    for raw in request.query.getall(name, []):
        out.extend(x for x in (s.strip() for s in raw.split(",")) if x)
    return out


def _q_time(request: web.Request, name: str) -> datetime | None:
    v = _q_int(request, name, None, 0)
    return datetime.fromtimestamp(v, UTC) if v is not None else None


def _encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"k{key}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("k"):
            raise ValueError
        return int(raw[1:])
    except ValueError:
        raise _bad(f"cursor {cursor!r} is not a cursor this server issued") from None


def _paginate(keyed: list[tuple[int, T]], limit: int, cursor: str | None, *, newest_first: bool
              ) -> tuple[list[T], str]:
    """One page of `(stable key, item)` pairs in key order; the cursor is "" after the last page."""
    items = keyed[::-1] if newest_first else keyed
    if cursor:
        k = _decode_cursor(cursor)
        items = [x for x in items if (x[0] < k if newest_first else x[0] > k)]
    page = items[:limit]
    more = len(items) > limit
    return [x for _, x in page], (_encode_cursor(page[-1][0]) if more and page else "")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        raise _bad("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _bad("request body must be a JSON object")
    return data


def _field_str(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    v = body.get(name)
    if v is None:
        if required:
            raise _bad(f"{name} is required")
        return None
    if not isinstance(v, str) or not v:
        raise _bad(f"{name} must be a non-empty string")
    return v


def _field_bool(body: dict[str, Any], name: str) -> bool:
    v = body.get(name, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(f"{name} must be true or false")
    return v


def _field_price(body: dict[str, Any], name: str = "price") -> int:
    raw = _field_str(body, name)
    try:
        return parse_dollars(raw)  # type: ignore[arg-type]
    except MoneyError as e:
        raise _bad(f"{name}: {e}") from None


def _field_count(body: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise _bad(f"{name} is required")
        return None
    try:
        return parse_count(raw)
    except MoneyError as e:
        raise _bad(f"{name}: {e}") from None


def _book_side(body: dict[str, Any]) -> str:
    side = _field_str(body, "side")
    if side not in ("bid", "ask"):
        raise _bad(f"side must be 'bid' (buy YES) or 'ask' (sell YES / buy NO), got {side!r}; "
                   "V2 orders quote the YES leg")
    return side  # type: ignore[return-value]


_STATUS_FILTER = {
    "unopened": ("initialized",),
    # Since 2025-11 `open` also matches paused markets inside trading hours (kalshi_api.md §3.4).
    "open": ("active", "inactive"),
    "paused": ("inactive",),
    "closed": ("closed", "determined", "disputed", "amended"),
    "settled": ("finalized",),
}


@dataclass
class _Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]


class SimExchange:
    """The simulated Kalshi exchange in front of a World: REST v2 + WebSocket v2 on one port."""

    def __init__(self, world: World, *, rate_limit: Tier | None = None,
                 auth_clock: Callable[[], datetime] | None = None, max_skew_s: float = 30.0,
                 ping_interval_s: float = 10.0, background: bool = False, tick_s: float = 1.0,
                 traders: Stepper | None = None, trader_steps: int = 1, auto_route_by_ticker: bool = True) -> None:
        """`auto_route_by_ticker=False` sends an order call that names a market but no `exchange_index` to
        shard 0 (the sharding guide's wording) instead of the market's shard (the reference's)."""
        self.world = world
        self.auto_route_by_ticker = auto_route_by_ticker
        self.faults = Faults()
        # Skew is checked against wall time unless told otherwise: clients sign with their wall clock.
        clock_ms = (lambda: render.ts_ms(auth_clock())) if auth_clock is not None else wall_clock_ms
        self.keys = KeyRing(clock_ms=clock_ms, max_skew_ms=int(max_skew_s * 1000))
        self.rate_limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        self.background = background
        self.tick_s = tick_s
        self.traders = traders
        self.trader_steps = trader_steps
        self.tape = Tape(self.clock)
        self.hub = Hub(self, self.faults, ping_interval_s=ping_interval_s)
        self.faults.attach(self.hub)
        for t in self.engine.trades():
            self.tape.add_trade(t)
        self._listed_markets = set(self.catalog.markets)
        self._listed_events = set(self.catalog.events)
        self.engine.listen(self._on_event)
        self._runner: web.AppRunner | None = None
        self.requests: Counter[str] = Counter()  # "POST /trade-api/v2/portfolio/events/orders" → calls
        self._bg_task: asyncio.Task[None] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.app = self._build_app()

    # -- world access ---------------------------------------------------------------------------

    @property
    def engine(self) -> MatchingEngine:
        """The World's matching engine."""
        return self.world.engine

    @property
    def catalog(self) -> Catalog:
        """The World's catalog of series, events and markets."""
        return self.world.catalog

    def clock(self) -> datetime:
        """The World's clock (UTC)."""
        return self.world.clock()

    def _on_event(self, ev: EngineEvent) -> None:
        # Runs inside the engine's call: never let a rendering bug unwind a half-applied match.
        try:
            self.tape.on_event(ev)
            self.hub.on_event(ev)
        except Exception:
            log.exception("sim_event_fanout_failed", event=type(ev).__name__)

    # MarketData for the WebSocket hub.
    def market_exists(self, ticker: str) -> bool:
        """True when `ticker` is listed."""
        return ticker in self.catalog.markets

    def market_info(self, ticker: str) -> MarketInfo | None:
        """A listed market's catalog entry."""
        return self.catalog.markets.get(ticker)

    def all_tickers(self) -> list[str]:
        """Every listed market."""
        return list(self.catalog.markets)

    def book(self, ticker: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(YES bids, NO bids), ascending."""
        yes, no = self.engine.book(ticker)
        return list(yes), list(no)

    def top(self, ticker: str) -> Top:
        """Best bids of both sides."""
        return Top.of(*self.engine.book(ticker, 1))

    def stats(self, ticker: str) -> MarketStats:
        """Tape statistics of a market."""
        return self.tape.stats(ticker)

    def user_volume(self, user_id: str, ticker: str) -> int:
        """Contracts a user traded in a market."""
        return self.tape.user_volume(user_id, ticker)

    def exchange_index(self, ticker: str) -> int:
        """The shard a market lives on."""
        m = self.catalog.markets.get(ticker)
        return m.shard if m is not None else 0

    # -- routing (kalshi_api.md §3.12) ------------------------------------------------------------

    def _shard_of(self, ticker: str) -> int:
        m = self.catalog.markets.get(ticker)
        if m is None:
            raise ExchangeError("not_found", f"market {ticker} not found", status=404, details=ticker)
        return m.shard

    def route(self, exchange_index: object, ticker: str | None, where: str) -> int:
        """The shard an order call goes to: its `exchange_index`, else the market it names, else shard 0."""
        idx = _index_value(exchange_index, where)
        if idx == AUTO_ROUTE:
            if not ticker:
                raise _bad(f"{where}: exchange_index -1 routes by market ticker, and none was given")
            return self._shard_of(ticker)
        if idx is not None:
            return idx
        if ticker and self.auto_route_by_ticker:
            return self._shard_of(ticker)
        return 0

    def _market_on(self, shard: int, ticker: str) -> None:
        """404 unless `ticker` is listed on `shard` (another shard's engine does not know the market)."""
        if ticker in self.catalog.markets and self._shard_of(ticker) != shard:
            raise ExchangeError("not_found", f"market {ticker} not found on exchange index {shard}", status=404,
                                details=ticker)

    def _order_on(self, user: str, order_id: str, shard: int) -> EngineOrder:
        """The user's order if it lives on `shard`; 404 as from an engine that never saw it otherwise."""
        o = self.engine.get_order(user, order_id)
        if self.exchange_index(o.ticker) != shard:
            raise _order_not_found(order_id)
        return o

    def _list_shard(self, request: web.Request, ticker: str | None) -> int | None:
        """The shard a portfolio list is narrowed to (None = every shard)."""
        raw = request.query.get("exchange_index")
        if raw is None or raw == "":
            return None
        return self.route(raw, ticker, request.path)

    # -- users ----------------------------------------------------------------------------------

    def register_key(self, key_id: str, public_key_pem: bytes, user_id: str, *,
                     balance: int | Mapping[int, int] | None = None) -> None:
        """Accept signatures of `key_id` as `user_id`; open the user's account with `balance` if given (see `fund`)."""
        self.keys.register(key_id, public_key_pem, user_id)
        if balance is not None:
            self.fund(user_id, balance)

    def funded_shards(self) -> list[int]:
        """Shards a new account is funded on: 0 and every shard a listed series or event lives on."""
        return sorted({0, *(s.exchange_index for s in self.catalog.series.values()),
                       *(e.shard for e in self.catalog.events.values())})

    def fund(self, user_id: str, balance: int | Mapping[int, int]) -> bool:
        """Open `user_id`'s engine account unless it exists; True when opened.

        Collateral is per shard (Kalshi: "preallocate collateral on a given exchange shard"): a mapping
        gives each exchange index its ticks; a number is split evenly over `funded_shards()` (the
        remainder on shard 0), so the account's total is that number.
        """
        try:
            self.engine.balance(user_id)
            return False
        except (ExchangeError, KeyError):
            pass
        if isinstance(balance, Mapping):
            shards = dict(balance)
        else:
            on = self.funded_shards()
            share, rest = divmod(balance, len(on))
            shards = {k: share + (rest if k == 0 else 0) for k in on}
        for k in shards:
            if k not in SHARDS:
                raise ValueError(f"exchange index {k} is not one of {sorted(SHARDS)}")
        for k, amount in sorted(shards.items()):
            self.engine.open_account(user_id, amount, exchange_index=k)
        return True

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API (`http://127.0.0.1:PORT/trade-api/v2`)."""
        return f"http://{self._url_host}:{self.port}{REST_PREFIX}"

    @property
    def ws_url(self) -> str:
        """URL of the WebSocket API (`ws://127.0.0.1:PORT/trade-api/ws/v2`)."""
        return f"ws://{self._url_host}:{self.port}{WS_PATH}"

    @property
    def _url_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 = a free port) and start the background driver when enabled."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self.host = host
        self.port = runner.addresses[0][1]
        if self.background:
            self._bg_task = asyncio.create_task(self._drive())
        log.info("sim_exchange_started", rest_url=self.rest_url, ws_url=self.ws_url)

    async def stop(self) -> None:
        """Stop the driver, close WebSocket connections and stop listening."""
        if self._bg_task is not None:
            self._bg_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._bg_task
            self._bg_task = None
        await self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("sim_exchange_stopped")

    async def __aenter__(self) -> SimExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _drive(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.tick()
            except Exception:
                log.exception("sim_tick_failed")

    def tick(self, now: datetime | None = None) -> None:
        """One background step: advance the world, expire orders, step traders, announce new listings."""
        now = now or self.clock()
        advance = getattr(self.world, "advance", None)
        if callable(advance):
            advance(now)
        self.engine.expire(now)
        traders = self.traders or getattr(self.world, "traders", None)
        if traders is not None:
            traders.step(self.trader_steps)
        self.announce_listings()
        for ticker in self.catalog.markets:
            with contextlib.suppress(ExchangeError):
                self.tape.roll_top(ticker, lambda t=ticker: self.top(t), now)

    def announce_listings(self) -> None:
        """Send `created` lifecycle messages for events and markets listed since the last call."""
        for e in self.catalog.events.values():
            if e.event_ticker not in self._listed_events:
                self._listed_events.add(e.event_ticker)
                self.hub.event_created(e, self.catalog.series.get(e.series_ticker))
        for m in self.catalog.markets.values():
            if m.ticker not in self._listed_markets:
                self._listed_markets.add(m.ticker)
                self.hub.market_created(m)

    # -- HTTP plumbing --------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        P = REST_PREFIX
        routes = [
            _Route("GET", P + "/exchange/status", self._exchange_status),
            _Route("GET", P + "/exchange/schedule", self._exchange_schedule),
            _Route("GET", P + "/series/fee_changes", self._series_fee_changes),
            _Route("GET", P + "/series", self._series_list),
            _Route("GET", P + "/series/{ticker}", self._series_get),
            _Route("GET", P + "/events", self._events_list),
            _Route("GET", P + "/events/{ticker}", self._events_get),
            _Route("GET", P + "/markets", self._markets_list),
            _Route("GET", P + "/markets/trades", self._trades),
            _Route("GET", P + "/markets/orderbooks", self._orderbooks),
            _Route("GET", P + "/markets/{ticker}", self._markets_get),
            _Route("GET", P + "/markets/{ticker}/orderbook", self._orderbook),
            _Route("GET", P + "/account/limits", self._account_limits),
            _Route("GET", P + "/portfolio/balance", self._balance),
            _Route("GET", P + "/portfolio/positions", self._positions),
            _Route("GET", P + "/portfolio/fills", self._fills),
            _Route("GET", P + "/portfolio/settlements", self._settlements),
            _Route("POST", P + "/portfolio/events/orders/batched", self._batch_create),
            _Route("DELETE", P + "/portfolio/events/orders/batched", self._batch_cancel),
            _Route("POST", P + "/portfolio/events/orders", self._create),
            _Route("DELETE", P + "/portfolio/events/orders", self._cancel_all),
            _Route("DELETE", P + "/portfolio/events/orders/{order_id}", self._cancel),
            _Route("POST", P + "/portfolio/events/orders/{order_id}/amend", self._amend),
            _Route("POST", P + "/portfolio/events/orders/{order_id}/decrease", self._decrease),
            _Route("GET", P + "/portfolio/orders", self._orders),
            _Route("GET", P + "/portfolio/orders/queue_positions", self._queue_positions),
            _Route("GET", P + "/portfolio/orders/{order_id}", self._order_get),
            _Route("GET", P + "/portfolio/orders/{order_id}/queue_position", self._queue_position),
            # Legacy order writes were switched off in June 2026 (kalshi_api.md §3.9).
            _Route("POST", P + "/portfolio/orders", self._legacy),
            _Route("POST", P + "/portfolio/orders/batched", self._legacy),
            _Route("DELETE", P + "/portfolio/orders/batched", self._legacy),
            _Route("DELETE", P + "/portfolio/orders/{order_id}", self._legacy),
            _Route("POST", P + "/portfolio/orders/{order_id}/amend", self._legacy),
            _Route("POST", P + "/portfolio/orders/{order_id}/decrease", self._legacy),
            _Route("GET", WS_PATH, self._websocket),
        ]
        for r in routes:
            app.router.add_route(r.method, r.path, r.handler)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if self.faults.latency_s > 0:
            await asyncio.sleep(self.faults.latency_s)
        try:
            miss = request.match_info.http_exception
            if miss is not None:
                return await self._unrouted(request, miss)
            path = request.path
            signed_path = request.raw_path.split("?", 1)[0]
            needs_auth = path == WS_PATH or path.startswith(_AUTH_REQUIRED)
            user: str | None = None
            if needs_auth or self.keys.has_auth(request.headers):
                try:
                    user = self.keys.verify(request.method, signed_path, request.headers)
                except AuthError as e:
                    log.info("sim_auth_rejected", path=path, reason=e.reason)
                    return _json(e.body(), 401)
            if user is not None:
                request[_USER] = user
            # What the exchange was asked, by route (tests count creates, cancels ... through it).
            self.requests[f"{request.method} {request.match_info.route.resource.canonical}"] += 1
            if user is not None and self.rate_limiter is not None and path != WS_PATH:
                items = 0
                if path == _BATCHED:
                    with contextlib.suppress(Exception):
                        items = len((await _body(request)).get("orders") or [])
                bucket, cost = classify(request.method, path, items)
                if not self.rate_limiter.charge(user, bucket, cost):
                    return _json(TOO_MANY_REQUESTS_BODY, 429)  # deliberately no Retry-After
            lost = self.faults.take_lost_response(request.method, path)
            response = await handler(request)
            if self.faults.response_delay_s > 0 and request.method != "GET":
                await asyncio.sleep(self.faults.response_delay_s)
            if lost is not None:
                # The exchange did the work but the client never hears back: what a proxy timeout or a
                # dropped connection looks like from outside.
                return _error(lost, "service_unavailable", "service unavailable", "injected lost response")
            return response
        except ExchangeError as e:
            return _error(e.status, e.code, e.message, e.details)
        except web.HTTPException:
            raise  # redirects
        except Exception as e:
            log.exception("sim_request_failed", method=request.method, path=request.path)
            return _error(500, "internal_server_error", "internal server error", f"{type(e).__name__}: {e}")

    async def _unrouted(self, request: web.Request, miss: web.HTTPException) -> web.StreamResponse:
        path = request.path
        if path.endswith("/") and len(path) > 1:
            # Collection paths with a trailing slash redirect to the bare path (Kalshi, Oct 2025).
            target = path.rstrip("/") + (f"?{request.query_string}" if request.query_string else "")
            match = await request.app.router.resolve(request.clone(rel_url=target))
            if match.http_exception is None:
                raise web.HTTPMovedPermanently(location=target)
        if isinstance(miss, web.HTTPMethodNotAllowed):
            return _error(405, "method_not_allowed", "method not allowed", f"{request.method} {path}")
        return _error(404, "not_found", "not found", f"no such endpoint: {request.method} {path}")

    @staticmethod
    def _user(request: web.Request) -> str:
        user = request.get(_USER)
        if user is None:  # the middleware guarantees it on authenticated paths
            raise AuthError("MISSING_AUTH_HEADERS")
        return str(user)

    def _now_ms(self) -> int:
        return render.ts_ms(self.clock())

    def _market_json(self, m: MarketInfo) -> Json:
        out = render.market_json(m, self.engine.market(m.ticker), self.top(m.ticker), self.tape.stats(m.ticker))
        return break_contract("market", out, self.faults.contract_break)

    def _listed_since(self, markets: Iterable[MarketInfo]) -> datetime:
        """When the first of some markets was listed (the clock when there are none)."""
        return min((m.created_time or m.open_time for m in markets), default=self.clock())

    def _series_json(self, s: SeriesInfo, *, volume: int | None = None) -> Json:
        since = self._listed_since(m for m in self.catalog.markets.values() if m.series_ticker == s.ticker)
        return break_contract("series", render.series_json(s, updated=since, volume=volume),
                              self.faults.contract_break)

    def _event_json(self, e: EventInfo, markets: list[Json] | None) -> Json:
        return render.event_json(e, self.catalog.series.get(e.series_ticker), markets,
                                 updated=self._listed_since(self.catalog.markets_of(e.event_ticker)))

    def _listed(self, ticker: str) -> MarketInfo:
        m = self.catalog.markets.get(ticker)
        if m is None:
            raise _not_found(f"market {ticker} not found")
        return m

    # -- exchange, series, events, markets ------------------------------------------------------

    async def _exchange_status(self, request: web.Request) -> web.StreamResponse:
        trading = not self.faults.trading_paused
        return _json({
            "exchange_active": True, "trading_active": trading, "intra_exchange_transfers_active": True,
            "exchange_estimated_resume_time": None,
            "exchange_index_statuses": [
                {"exchange_index": i, "description": d, "exchange_active": True, "trading_active": trading,
                 "intra_exchange_transfers_active": True}
                for i, d in SHARDS.items()],
        })

    async def _exchange_schedule(self, request: web.Request) -> web.StreamResponse:
        day = [{"open_time": "00:00", "close_time": "24:00"}]
        days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        return _json({"schedule": {
            "standard_hours": [{"start_time": "2020-01-01T00:00:00Z", "end_time": "2099-01-01T00:00:00Z",
                                **{d: day for d in days}}],
            "maintenance_windows": [],
        }})

    async def _series_fee_changes(self, request: web.Request) -> web.StreamResponse:
        return _json({"series_fee_change_arr": []})

    async def _series_list(self, request: web.Request) -> web.StreamResponse:
        category = request.query.get("category")
        tags = set(_q_list(request, "tags"))
        # `category` matches any entry of a series' `categories` (SDK 3.34 get-series-list).
        out = [self._series_json(s) for s in self.catalog.series.values()
               if (not category or category in s.all_categories()) and (not tags or tags & set(s.tags))]
        return _json({"series": out})

    async def _series_get(self, request: web.Request) -> web.StreamResponse:
        s = self.catalog.series.get(request.match_info["ticker"])
        if s is None:
            raise _not_found(f"series {request.match_info['ticker']} not found")
        volume = None
        if _q_bool(request, "include_volume"):
            volume = sum(self.tape.stats(m.ticker).volume for m in self.catalog.markets.values()
                         if m.series_ticker == s.ticker)
        return _json({"series": self._series_json(s, volume=volume)})

    def _market_matches(self, m: MarketInfo, status: str | None) -> bool:
        return status is None or self.engine.market(m.ticker).status in _STATUS_FILTER[status]

    def _status_param(self, request: web.Request) -> str | None:
        status = request.query.get("status") or None
        if status is not None and status not in _STATUS_FILTER:
            raise _bad(f"status must be one of {sorted(_STATUS_FILTER)} (one per request), got {status!r}")
        return status

    async def _events_list(self, request: web.Request) -> web.StreamResponse:
        limit = _q_int(request, "limit", 200, 1, 200)
        status = self._status_param(request)
        series = request.query.get("series_ticker")
        tickers = set(_q_list(request, "tickers"))
        nested = _q_bool(request, "with_nested_markets")
        min_close = _q_time(request, "min_close_ts")
        keyed: list[tuple[int, Any]] = []
        for i, e in enumerate(self.catalog.events.values()):
            if (series and e.series_ticker != series) or (tickers and e.event_ticker not in tickers):
                continue
            markets = self.catalog.markets_of(e.event_ticker)
            if status is not None and not any(self._market_matches(m, status) for m in markets):
                continue  # an event matches a status when any of its markets does
            if min_close is not None and not any(m.close_time >= min_close for m in markets):
                continue
            keyed.append((i, e))
        page, cursor = _paginate(keyed, limit or 200, request.query.get("cursor"), newest_first=False)
        events = [self._event_json(e, [self._market_json(m) for m in self.catalog.markets_of(e.event_ticker)]
                                   if nested else None) for e in page]
        out: Json = {"events": events, "cursor": cursor}
        if _q_bool(request, "with_milestones"):
            out["milestones"] = []
        return _json(out)

    async def _events_get(self, request: web.Request) -> web.StreamResponse:
        ticker = request.match_info["ticker"]
        e = self.catalog.events.get(ticker)
        if e is None:
            raise _not_found(f"event {ticker} not found")
        markets = [self._market_json(m) for m in self.catalog.markets_of(ticker)]
        nested = _q_bool(request, "with_nested_markets")
        # With nested markets they live inside the event; the top-level `markets` is the deprecated twin.
        return _json({"event": self._event_json(e, markets if nested else None),
                      "markets": [] if nested else markets})

    async def _markets_list(self, request: web.Request) -> web.StreamResponse:
        limit = _q_int(request, "limit", 100, 0, 1000) or 100
        status = self._status_param(request)
        event = request.query.get("event_ticker")
        series = request.query.get("series_ticker")
        tickers = set(_q_list(request, "tickers"))
        mve = request.query.get("mve_filter") or None
        if mve not in (None, "only", "exclude"):
            raise _bad(f"mve_filter must be 'only' or 'exclude', got {mve!r}")
        min_close, max_close = _q_time(request, "min_close_ts"), _q_time(request, "max_close_ts")
        min_created, max_created = _q_time(request, "min_created_ts"), _q_time(request, "max_created_ts")
        keyed: list[tuple[int, MarketInfo]] = []
        for i, m in enumerate(self.catalog.markets.values()):
            created = m.created_time or m.open_time
            if ((event and m.event_ticker != event) or (series and m.series_ticker != series)
                    or (tickers and m.ticker not in tickers)
                    or (mve == "only" and not m.ticker.startswith("KXMVE"))
                    or (mve == "exclude" and m.ticker.startswith("KXMVE"))
                    or (min_close and m.close_time < min_close) or (max_close and m.close_time > max_close)
                    or (min_created and created < min_created) or (max_created and created > max_created)
                    or not self._market_matches(m, status)):
                continue
            keyed.append((i, m))
        page, cursor = _paginate(keyed, limit, request.query.get("cursor"), newest_first=False)
        return _json({"markets": [self._market_json(m) for m in page], "cursor": cursor})

    async def _markets_get(self, request: web.Request) -> web.StreamResponse:
        return _json({"market": self._market_json(self._listed(request.match_info["ticker"]))})

    def _depth(self, request: web.Request) -> int | None:
        depth = _q_int(request, "depth", 0, None, 100)
        return depth if depth and depth > 0 else None  # 0 or negative = the whole book

    async def _orderbook(self, request: web.Request) -> web.StreamResponse:
        ticker = self._listed(request.match_info["ticker"]).ticker
        yes, no = self.engine.book(ticker, self._depth(request))
        return _json({"orderbook_fp": render.orderbook_json(list(yes), list(no))})

    async def _orderbooks(self, request: web.Request) -> web.StreamResponse:
        tickers = list(dict.fromkeys(_q_list(request, "tickers")))
        if not tickers:
            raise _bad("tickers is required")
        if len(tickers) > 100:
            raise _bad(f"at most 100 tickers per request, got {len(tickers)}")
        depth = self._depth(request)
        out = []
        for t in tickers:
            self._listed(t)
            yes, no = self.engine.book(t, depth)
            out.append({"ticker": t, "orderbook_fp": render.orderbook_json(list(yes), list(no))})
        return _json({"orderbooks": out})

    async def _trades(self, request: web.Request) -> web.StreamResponse:
        limit = _q_int(request, "limit", 100, 1, 1000) or 100
        ticker = request.query.get("ticker") or None
        lo, hi = _q_time(request, "min_ts"), _q_time(request, "max_ts")
        keyed = [(i, t) for i, t in enumerate(self.engine.trades(ticker))
                 if (lo is None or t.created_time >= lo) and (hi is None or t.created_time <= hi)]
        page, cursor = _paginate(keyed, limit, request.query.get("cursor"), newest_first=True)
        return _json({"trades": [render.trade_json(t) for t in page], "cursor": cursor})

    async def _account_limits(self, request: web.Request) -> web.StreamResponse:
        tier = self.rate_limiter.tier if self.rate_limiter is not None else _UNLIMITED
        # `read` and `write` are required {refill_rate, bucket_capacity} integer objects, never null.
        return _json({"usage_tier": tier.name,
                      "read": {"refill_rate": round(tier.read_per_s), "bucket_capacity": round(tier.capacity("read"))},
                      "write": {"refill_rate": round(tier.write_per_s),
                                "bucket_capacity": round(tier.capacity("write"))},
                      "grants": []})

    # -- portfolio reads ------------------------------------------------------------------------

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        # With an exchange_index: that shard's balance; without: the account's (the breakdown's sum).
        shard = _index_value(request.query.get("exchange_index"), "GET /portfolio/balance")
        if shard == AUTO_ROUTE:
            raise _bad("GET /portfolio/balance: exchange_index -1 needs a market; give a shard")
        bal = self.engine.balance(user, shard)
        value = self.engine.portfolio_value(user, shard)
        return _json({
            "balance": render.cents(bal), "balance_dollars": render.dollars(bal),
            "portfolio_value": render.cents(value), "updated_ts": render.unix_s(self.clock()),
            "balance_breakdown": [{"exchange_index": k, "balance": render.dollars(v)}
                                  for k, v in self.engine.balances(user).items()],
        })

    async def _positions(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        limit = _q_int(request, "limit", 100, 1, 1000) or 100
        ticker = request.query.get("ticker") or None
        events = set(_q_list(request, "event_ticker"))
        count_filter = set(_q_list(request, "count_filter"))
        if count_filter - {"position", "total_traded"}:
            raise _bad("count_filter takes 'position' and/or 'total_traded'")
        shard = self._list_shard(request, ticker)
        keyed = []
        for i, p in enumerate(self.engine.positions(user)):
            if shard is not None and self.exchange_index(p.ticker) != shard:
                continue
            info = self.catalog.markets.get(p.ticker)
            event = info.event_ticker if info else self.engine.market(p.ticker).event_ticker
            # Settled positions leave this endpoint (since 2025-12); they are in /portfolio/settlements.
            if self.engine.market(p.ticker).status == "finalized":
                continue
            if (ticker and p.ticker != ticker) or (events and event not in events):
                continue
            if ("position" in count_filter and p.position == 0) or (
                    "total_traded" in count_filter and p.total_traded == 0):
                continue
            keyed.append((i, (event, p)))
        page, cursor = _paginate(keyed, limit, request.query.get("cursor"), newest_first=False)
        by_event: dict[str, list[Any]] = {}
        for _, (event, p) in keyed:
            by_event.setdefault(event, []).append(p)
        page_events = list(dict.fromkeys(e for e, _ in page))
        return _json({
            "market_positions": [render.position_json(p, exchange_index=self.exchange_index(p.ticker),
                                                      now=self.clock()) for _, p in page],
            "event_positions": [render.event_position_json(e, by_event[e]) for e in page_events],
            "cursor": cursor,
        })

    async def _fills(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        limit = _q_int(request, "limit", 100, 1, 1000) or 100
        ticker = request.query.get("ticker") or None
        order_id = request.query.get("order_id") or None
        lo, hi = _q_time(request, "min_ts"), _q_time(request, "max_ts")
        shard = self._list_shard(request, ticker)
        keyed = [(i, f) for i, f in enumerate(self.engine.fills(user))
                 if (ticker is None or f.ticker == ticker) and (order_id is None or f.order_id == order_id)
                 and (lo is None or f.created_time >= lo) and (hi is None or f.created_time <= hi)
                 and (shard is None or self.exchange_index(f.ticker) == shard)]
        page, cursor = _paginate(keyed, limit, request.query.get("cursor"), newest_first=True)
        return _json({"fills": [render.fill_json(f, exchange_index=self.exchange_index(f.ticker)) for f in page],
                      "cursor": cursor})

    async def _settlements(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        limit = _q_int(request, "limit", 100, 1, 1000) or 100
        ticker = request.query.get("ticker") or None
        event = request.query.get("event_ticker") or None
        lo, hi = _q_time(request, "min_ts"), _q_time(request, "max_ts")
        shard = self._list_shard(request, ticker)
        keyed = [(i, s) for i, s in enumerate(self.engine.settlements(user))
                 if (ticker is None or s.ticker == ticker) and (event is None or s.event_ticker == event)
                 and (lo is None or s.settled_time >= lo) and (hi is None or s.settled_time <= hi)
                 and (shard is None or self.exchange_index(s.ticker) == shard)]
        page, cursor = _paginate(keyed, limit, request.query.get("cursor"), newest_first=True)
        return _json({"settlements": [render.settlement_json(s, exchange_index=self.exchange_index(s.ticker))
                                      for s in page], "cursor": cursor})

    async def _orders(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        limit = _q_int(request, "limit", 100, 1, 1000) or 100
        ticker = request.query.get("ticker") or None
        events = set(_q_list(request, "event_ticker"))
        if len(events) > 10:
            raise _bad("event_ticker takes at most 10 tickers")
        status = request.query.get("status") or None
        if status not in (None, "resting", "canceled", "executed"):
            raise _bad(f"status must be resting, canceled or executed, got {status!r}")
        lo, hi = _q_time(request, "min_ts"), _q_time(request, "max_ts")
        # An order read is routed like any order call; without an index or a market it lists every shard,
        # unless omitted indexes mean shard 0 (auto_route_by_ticker=False).
        shard = self._list_shard(request, ticker)
        if shard is None and not self.auto_route_by_ticker:
            shard = 0
        keyed = []
        for i, o in enumerate(self.engine.orders(user)):
            if (ticker and o.ticker != ticker) or (status and o.status != status):
                continue
            if shard is not None and self.exchange_index(o.ticker) != shard:
                continue
            if events and self.engine.market(o.ticker).event_ticker not in events:
                continue
            if (lo and o.created_time < lo) or (hi and o.created_time > hi):
                continue
            keyed.append((i, o))
        page, cursor = _paginate(keyed, limit, request.query.get("cursor"), newest_first=True)
        return _json({"orders": [render.order_json(o, exchange_index=self.exchange_index(o.ticker)) for o in page],
                      "cursor": cursor})

    def _order_routed(self, request: web.Request) -> EngineOrder:
        """The order of a by-id read, on the shard its `exchange_index` names (shard 0 when omitted: the
        call names no market to route by)."""
        oid = request.match_info["order_id"]
        shard = self.route(request.query.get("exchange_index"), None, request.path)
        return self._order_on(self._user(request), oid, shard)

    async def _order_get(self, request: web.Request) -> web.StreamResponse:
        o = self._order_routed(request)
        return _json({"order": render.order_json(o, exchange_index=self.exchange_index(o.ticker))})

    async def _queue_position(self, request: web.Request) -> web.StreamResponse:
        o = self._order_routed(request)
        n = self.engine.queue_position(self._user(request), o.order_id)
        return _json({"queue_position_fp": render.count(n)})

    async def _queue_positions(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        tickers = set(_q_list(request, "market_tickers"))
        event = request.query.get("event_ticker") or None
        if not tickers and not event:
            raise _bad("one of market_tickers or event_ticker is required")
        # The markets named route themselves (-1, or omitted by the reference's reading); an index narrows.
        idx = _index_value(request.query.get("exchange_index"), request.path)
        shard = (None if self.auto_route_by_ticker else 0) if idx is None else None if idx == AUTO_ROUTE else idx
        out = []
        for o in self.engine.orders(user, status="resting"):
            if (tickers and o.ticker not in tickers) or (
                    event and self.engine.market(o.ticker).event_ticker != event):
                continue
            if shard is not None and self.exchange_index(o.ticker) != shard:
                continue
            out.append({"order_id": o.order_id, "market_ticker": o.ticker,
                        "queue_position_fp": render.count(self.engine.queue_position(user, o.order_id))})
        return _json({"queue_positions": out})

    # -- V2 order writes ------------------------------------------------------------------------

    def _order_request(self, body: dict[str, Any]) -> OrderRequest:
        """Validate a CreateOrderV2Request body into the engine's OrderRequest."""
        ticker = _field_str(body, "ticker")
        side = _book_side(body)
        n = _field_count(body, "count")
        price = _field_price(body)
        tif = _field_str(body, "time_in_force")
        if tif not in ("fill_or_kill", "good_till_canceled", "immediate_or_cancel"):
            raise _bad(f"time_in_force must be fill_or_kill, good_till_canceled or immediate_or_cancel, got {tif!r}")
        stp = _field_str(body, "self_trade_prevention_type")
        if stp not in ("taker_at_cross", "maker"):
            raise _bad(f"self_trade_prevention_type must be taker_at_cross or maker, got {stp!r}")
        client_order_id = _field_str(body, "client_order_id", required=False)
        expiration = None
        raw_exp = body.get("expiration_time")
        if raw_exp is not None:
            if isinstance(raw_exp, bool) or not isinstance(raw_exp, int):
                raise _bad("expiration_time must be Unix seconds (an integer)")
            if tif == "immediate_or_cancel":
                raise _bad("Cannot specify both immediate_or_cancel and expiration_ts")
            if tif != "good_till_canceled":
                raise _bad("expiration_time is only allowed with good_till_canceled")
            expiration = datetime.fromtimestamp(raw_exp, UTC)
            if expiration <= self.clock():
                raise _bad("Expiration timestamp must be in the future")
        sub = body.get("subaccount", 0)
        if sub is None:
            sub = 0
        if isinstance(sub, bool) or not isinstance(sub, int) or not 0 <= sub <= 63:
            raise _bad("subaccount must be an integer from 0 to 63")
        if n == 0:
            raise ExchangeError("invalid_order_size", "count must be positive", status=400,
                                details="count must be at least 0.01")
        self._market_on(self.route(body.get("exchange_index"), ticker, "create order"), ticker)  # type: ignore[arg-type]
        return OrderRequest(
            ticker=ticker, book_side=side, price=price, count=n,  # type: ignore[arg-type]
            time_in_force=tif, self_trade_prevention_type=stp,  # type: ignore[arg-type]
            client_order_id=client_order_id, post_only=_field_bool(body, "post_only"),
            reduce_only=_field_bool(body, "reduce_only"), expiration_time=expiration,
            cancel_order_on_pause=_field_bool(body, "cancel_order_on_pause"), subaccount=sub,
            order_group_id=_field_str(body, "order_group_id", required=False))

    def _check_trading(self) -> None:
        if self.faults.trading_paused:
            raise ExchangeError("trading_is_paused", "trading is paused", status=409,
                                details="the exchange is paused; cancels are still accepted")

    def _place_json(self, res: PlaceResult) -> Json:
        o = res.order
        # PlaceResult.fills may carry the makers' sides too; the averages are this order's own.
        avg_price, avg_fee = render.average_fill(f for f in res.fills if f.order_id == o.order_id)
        out: Json = {"order_id": o.order_id, "client_order_id": o.client_order_id or "",
                     "fill_count": render.count(o.fill_count), "remaining_count": render.count(o.remaining_count)}
        if avg_price is not None:
            out["average_fill_price"] = avg_price
            out["average_fee_paid"] = avg_fee
        out["ts_ms"] = self._now_ms()
        return out

    async def _create(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        req = self._order_request(await _body(request))
        self._check_trading()
        return _json(self._place_json(self.engine.place(user, req)), 201)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        user, oid = self._user(request), request.match_info["order_id"]
        q = request.query
        self._order_on(user, oid, self.route(q.get("exchange_index"), q.get("market_ticker") or None, "cancel order"))
        order, reduced = self.engine.cancel(user, oid)
        return _json({"order_id": order.order_id, "client_order_id": order.client_order_id or "",
                      "reduced_by": render.count(reduced), "ts_ms": self._now_ms()})

    async def _amend(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        body = await _body(request)
        ticker = _field_str(body, "ticker")
        side = _book_side(body)
        price = _field_price(body)
        n = _field_count(body, "count")
        self._order_on(user, request.match_info["order_id"], self.route(body.get("exchange_index"), ticker,
                                                                        "amend order"))
        self._check_trading()
        res = self.engine.amend(user, request.match_info["order_id"], ticker=ticker, book_side=side, price=price,
                                count=n, client_order_id=_field_str(body, "client_order_id", required=False),
                                updated_client_order_id=_field_str(body, "updated_client_order_id", required=False))
        o = res.order
        avg_price, avg_fee = render.average_fill(self.engine.fills(user, order_id=o.order_id))
        out: Json = {"order_id": o.order_id, "client_order_id": o.client_order_id or "",
                     "remaining_count": render.count(o.remaining_count), "fill_count": render.count(o.fill_count)}
        if avg_price is not None:
            out["average_fill_price"] = avg_price
            out["average_fee_paid"] = avg_fee
        out["ts_ms"] = self._now_ms()
        return _json(out)

    async def _decrease(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        body = await _body(request)
        by = _field_count(body, "reduce_by", required=False)
        to = _field_count(body, "reduce_to", required=False)
        if (by is None) == (to is None):
            raise _bad("exactly one of reduce_by and reduce_to is required")
        self._order_on(user, request.match_info["order_id"], self.route(
            body.get("exchange_index"), _field_str(body, "market_ticker", required=False), "decrease order"))
        o = self.engine.decrease(user, request.match_info["order_id"], reduce_by=by, reduce_to=to)
        return _json({"order_id": o.order_id, "client_order_id": o.client_order_id or "",
                      "remaining_count": render.count(o.remaining_count), "ts_ms": self._now_ms()})

    @staticmethod
    def _item_error(e: ExchangeError) -> Json:
        return {"code": e.code, "message": e.message, "details": e.details}

    async def _batch_create(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        orders = (await _body(request)).get("orders")
        if not isinstance(orders, list) or not orders:
            raise _bad("orders must be a non-empty list of CreateOrderV2Request objects")
        out = []
        for item in orders:
            coid = item.get("client_order_id") if isinstance(item, dict) else None
            try:
                if not isinstance(item, dict):
                    raise _bad("each order must be a JSON object")
                req = self._order_request(item)
                self._check_trading()
                out.append({**self._place_json(self.engine.place(user, req)), "error": None})
            except ExchangeError as e:
                out.append({"order_id": None, "client_order_id": coid if isinstance(coid, str) else None,
                            "fill_count": None, "remaining_count": None, "ts_ms": self._now_ms(),
                            "error": self._item_error(e)})
        return _json({"orders": out}, 201)

    async def _batch_cancel(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        body = await _body(request)
        orders = body.get("orders")
        if orders is None and isinstance(body.get("ids"), list):  # the legacy shape, still seen in old code
            orders = [{"order_id": i} for i in body["ids"]]
        if not isinstance(orders, list) or not orders:
            raise _bad("orders must be a non-empty list of {order_id} objects")
        out = []
        for item in orders:
            oid = item.get("order_id") if isinstance(item, dict) else None
            try:
                if not isinstance(oid, str) or not oid:
                    raise _bad("order_id is required")
                # Each item is routed on its own: its exchange_index, else its market_ticker, else shard 0.
                self._order_on(user, oid, self.route(item.get("exchange_index"),
                                                     _field_str(item, "market_ticker", required=False),
                                                     "batch cancel"))
                order, reduced = self.engine.cancel(user, oid)
                out.append({"order_id": order.order_id, "client_order_id": order.client_order_id or "",
                            "reduced_by": render.count(reduced), "ts_ms": self._now_ms(), "error": None})
            except ExchangeError as e:
                out.append({"order_id": oid if isinstance(oid, str) else "", "client_order_id": None,
                            "reduced_by": "0.00", "ts_ms": self._now_ms(), "error": self._item_error(e)})
        return _json({"orders": out})

    async def _cancel_all(self, request: web.Request) -> web.StreamResponse:
        self.engine.cancel_all(self._user(request))
        return web.Response(status=204)

    async def _legacy(self, request: web.Request) -> web.StreamResponse:
        return _error(400, "bad_request", "Please switch to the V2 endpoints",
                      "legacy /portfolio/orders writes are retired; use /portfolio/events/orders")

    # -- WebSocket ------------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        return await self.hub.serve(request, self._user(request))


__all__ = ["REST_PREFIX", "WS_PATH", "SimExchange", "Stepper", "Tape", "World"]
