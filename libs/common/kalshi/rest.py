"""Async REST client for Kalshi Trade API v2 (and the simulator, which serves the same paths).

Retry policy: 429 is always retried (Kalshi rejects before processing); 5xx and network errors
only for idempotent calls — reads, cancels, `reduce_to` decreases, amends (absolute count) — and
for creates that carry a `client_order_id`, which Kalshi deduplicates. A 409
`order_already_exists` on create means the order is on the book already: the client looks it up
and returns it marked `already_existed`. `trading_is_paused` is raised at once, never looped.
Attempts and waits are stamina's: `max_attempts` in all, exponential from `backoff_base_s` plus up to
`backoff_base_s` of jitter, capped at `backoff_cap_s`; each retry is logged as `stamina.retry_scheduled`.

Routing (kalshi_api.md §3.12). Kalshi's exchange is sharded, and an order call goes to shard 0 unless it
says otherwise: every order call here takes the shard (`exchange_index`, `AUTO_ROUTE` = route by the
market named) and, where the endpoint has one, the market (`market_ticker`). A cancel of a shard-2 order
sent without them reaches shard 0 and answers 404 while the order keeps resting. The client sends what
it is given; the caller knows the market and its shard (the executor: from the market definition).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx
import stamina
from pydantic import BaseModel, ValidationError

from libs.common.kalshi import errors as E
from libs.common.kalshi.models import (
    AmendResult,
    Balance,
    BatchCancelItem,
    BatchCreateItem,
    CancelResult,
    CreateOrderResult,
    DecreaseResult,
    Event,
    ExchangeStatus,
    Fill,
    Market,
    MarketPosition,
    Order,
    Orderbook,
    PublicTrade,
    QueuePosition,
    Series,
    SettlementRow,
)
from libs.common.kalshi.ratelimit import CANCEL_COST, DEFAULT_COST, TIERS, RateLimiter, Tier
from libs.common.kalshi.signing import Signer
from libs.common.logs import get_logger
from libs.common.money import format_count, format_dollars

log = get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

PROD_REST = "https://external-api.kalshi.com/trade-api/v2"
DEMO_REST = "https://external-api.demo.kalshi.co/trade-api/v2"
CREATE_PATH = "/portfolio/events/orders"  # the V2 create (kalshi_api.md §3.9)
PROD_WS = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
DEMO_WS = "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"

BookSide = Literal["bid", "ask"]
TimeInForce = Literal["fill_or_kill", "good_till_canceled", "immediate_or_cancel"]
AUTO_ROUTE = -1  # `exchange_index: -1`: Kalshi routes to the shard of the market ticker the call names


@dataclass(frozen=True)
class OrderRef:
    """An order with its route: its market and the shard that market lives on (None = not known)."""

    order_id: str
    ticker: str | None = None
    exchange_index: int | None = None

    def item(self) -> dict[str, Any]:
        """The batch-cancel item: `{order_id, exchange_index, market_ticker}`, routed on its own."""
        out: dict[str, Any] = {"order_id": self.order_id}
        if self.exchange_index is not None:
            out["exchange_index"] = self.exchange_index
        if self.ticker:
            out["market_ticker"] = self.ticker
        return out


@dataclass(frozen=True)
class Environment:
    """Where a client talks to; credentials are tied to one environment."""

    name: Literal["prod", "demo", "sim"]
    rest_url: str
    ws_url: str


PROD = Environment("prod", PROD_REST, PROD_WS)
DEMO = Environment("demo", DEMO_REST, DEMO_WS)


def sim_environment(rest_url: str, ws_url: str) -> Environment:
    """An environment for the simulator (or any Kalshi-compatible server)."""
    return Environment("sim", rest_url.rstrip("/"), ws_url)


@dataclass(frozen=True)
class _Call:
    idempotent: bool
    write: bool = False
    cost: int = DEFAULT_COST

    @property
    def retried_on(self) -> tuple[type[E.KalshiError], ...]:
        """Errors worth another attempt: 429 always (Kalshi rejects it before processing), 5xx and network
        errors only when repeating the call is harmless."""
        return (E.RateLimited, E.ServerError, E.TransportError) if self.idempotent else (E.RateLimited,)


READ = _Call(idempotent=True)


class KalshiRest:
    """One API key (or none, for public data) against one environment."""

    def __init__(self, env: Environment, signer: Signer | None = None, *, tier: Tier | str = "basic",
                 transport: httpx.AsyncBaseTransport | None = None, timeout_s: float = 10.0,
                 max_attempts: int = 5, backoff_base_s: float = 0.2, backoff_cap_s: float = 5.0) -> None:
        self.env = env
        self.signer = signer
        self.limiter = RateLimiter(TIERS[tier] if isinstance(tier, str) else tier)
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._http = httpx.AsyncClient(base_url=env.rest_url + "/", transport=transport, timeout=timeout_s,
                                       headers={"Accept": "application/json"})
        self._create_used: asyncio.Event | None = None  # set when a create took the headers signed ahead

    async def keep_signed_ahead(self, stop: asyncio.Event, *, every_s: float = 0.25) -> None:
        """Keep the next order create's headers signed ahead (signing.py), in a worker thread (the RSA work
        releases the GIL): again at once after a create took them, and before they grow too old to use."""
        if self.signer is None:
            return
        signer, url = self.signer, self.env.rest_url + CREATE_PATH
        self._create_used = used = asyncio.Event()
        while not stop.is_set():
            age = signer.ahead_age_ms("POST", url)
            if age is None or age < 0 or age > signer.ahead_max_age_ms // 2:
                try:
                    await asyncio.to_thread(signer.prepare, "POST", url)
                except Exception:  # never expected (the key signed at start); a create then signs inline
                    log.exception("sign_ahead_failed")
            used.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(used.wait(), every_s)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> KalshiRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- transport ------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, call: _Call = READ, params: Mapping[str, Any] | None = None,
                       body: Any = None, auth: bool = False) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        # timeout=None: the attempt count alone bounds the retries, as the constructor promises.
        async for attempt in stamina.retry_context(on=call.retried_on, attempts=self.max_attempts, timeout=None,
                                                   wait_initial=self.backoff_base_s, wait_max=self.backoff_cap_s,
                                                   wait_jitter=self.backoff_base_s):
            with attempt:
                return await self._attempt(method, path, call, clean, body, auth)
        raise AssertionError("unreachable: stamina re-raises the last error")

    async def _attempt(self, method: str, path: str, call: _Call, params: Mapping[str, Any], body: Any,
                       auth: bool) -> httpx.Response:
        """One try: rate-limit tokens, a fresh signature, the request; any failure as a typed KalshiError."""
        url = self.env.rest_url + path
        await self.limiter.acquire(call.write, call.cost)
        headers: dict[str, str] = {}
        if auth or self.signer is not None:
            if self.signer is None:
                raise E.ConfigurationError(f"{method} {path} needs API credentials; none are configured "
                                           f"for the {self.env.name} environment")
            headers.update(self.signer.sign(method, url))
        try:
            resp = await self._http.request(method, url, params=params, json=body, headers=headers)
        except httpx.TransportError as e:
            raise E.TransportError(f"{method} {path}: network error: {type(e).__name__}: {e}") from None
        if resp.status_code >= 400:
            raise _error_from(resp, method, path)
        return resp

    async def get_json(self, path: str, *, params: Mapping[str, Any] | None = None, auth: bool = False
                       ) -> dict[str, Any]:
        """A GET's raw JSON object, unparsed (the contract check reads the wire format itself)."""
        return _json(await self._request("GET", path, params=params, auth=auth), path)

    async def _get(self, path: str, model: type[M], *, key: str | None = None, params: Mapping[str, Any] | None = None,
                   auth: bool = False) -> M:
        resp = await self._request("GET", path, params=params, auth=auth)
        data = _json(resp, path)
        # .get: an answer without the key is a MalformedResponse (`_parse` says which key), not a KeyError.
        return _parse(model, data.get(key) if key else data, path, key)

    async def _pages(self, path: str, key: str, model: type[M], params: Mapping[str, Any], *, auth: bool = False,
                     limit: int = 200, max_pages: int = 10_000) -> AsyncIterator[M]:
        cursor: str | None = None
        for _ in range(max_pages):
            resp = await self._request("GET", path, params={**params, "limit": limit, "cursor": cursor}, auth=auth)
            data = _json(resp, path)
            for item in _items(data, key, path):
                yield _parse(model, item, path, key)
            cursor = data.get("cursor") or None  # "" (spec) or null (guide) both mean the end
            if not cursor:
                return
        raise E.MalformedResponse(f"GET {path}: more than {max_pages} pages; the cursor never ended")

    # -- public data ----------------------------------------------------------------------------

    async def exchange_status(self) -> ExchangeStatus:
        """Whether the exchange and trading are up."""
        return await self._get("/exchange/status", ExchangeStatus)

    async def series(self, ticker: str) -> Series:
        """One series (fee terms, settlement sources)."""
        return await self._get(f"/series/{ticker}", Series, key="series")

    async def series_list(self, *, category: str | None = None) -> list[Series]:
        """All series, optionally of one category."""
        resp = await self._request("GET", "/series", params={"category": category})
        return [_parse(Series, s, "/series", "series") for s in _items(_json(resp, "/series"), "series", "/series")]

    async def events(self, *, series_ticker: str | None = None, status: str | None = None,
                     with_nested_markets: bool = False, limit: int = 200) -> list[Event]:
        """Events (all pages)."""
        params = {"series_ticker": series_ticker, "status": status,
                  "with_nested_markets": "true" if with_nested_markets else None}
        return [e async for e in self._pages("/events", "events", Event, params, limit=limit)]

    async def event(self, event_ticker: str, *, with_nested_markets: bool = True) -> Event:
        """One event, with its markets by default."""
        resp = await self._request("GET", f"/events/{event_ticker}",
                                   params={"with_nested_markets": "true" if with_nested_markets else "false"})
        data = _json(resp, "/events/{t}")
        event = data.get("event")
        if isinstance(event, dict) and with_nested_markets and not event.get("markets") and data.get("markets"):
            event = {**event, "markets": data["markets"]}  # the deprecated top-level copy
        return _parse(Event, event, f"/events/{event_ticker}", "event")

    async def markets(self, *, event_ticker: str | None = None, series_ticker: str | None = None,
                      status: str | None = None, tickers: Sequence[str] | None = None,
                      exclude_combos: bool = True, limit: int = 1000) -> list[Market]:
        """Markets (all pages); combo (MVE) markets are excluded unless asked."""
        params = {"event_ticker": event_ticker, "series_ticker": series_ticker, "status": status,
                  "tickers": ",".join(tickers) if tickers else None,
                  "mve_filter": "exclude" if exclude_combos else None}
        return [m async for m in self._pages("/markets", "markets", Market, params, limit=limit)]

    async def market(self, ticker: str) -> Market:
        """One market."""
        return await self._get(f"/markets/{ticker}", Market, key="market")

    async def orderbook(self, ticker: str, *, depth: int | None = None) -> Orderbook:
        """One market's book (signed: the spec marks it authenticated since Dec 2025)."""
        return await self._get(f"/markets/{ticker}/orderbook", Orderbook, key="orderbook_fp",
                               params={"depth": depth})

    async def orderbooks(self, tickers: Sequence[str]) -> dict[str, Orderbook]:
        """Several books in one call (≤ 100 tickers per request; larger lists are split)."""
        out: dict[str, Orderbook] = {}
        for i in range(0, len(tickers), 100):
            chunk = list(tickers[i : i + 100])
            resp = await self._request("GET", "/markets/orderbooks", params={"tickers": ",".join(chunk)})
            for item in _items(_json(resp, "/markets/orderbooks"), "orderbooks", "/markets/orderbooks"):
                ticker = item.get("ticker") if isinstance(item, dict) else None
                if not isinstance(ticker, str):
                    raise E.MalformedResponse(f"/markets/orderbooks: a book without its ticker: {str(item)[:80]}")
                out[ticker] = _parse(Orderbook, item.get("orderbook_fp") or {}, "/markets/orderbooks", "orderbook_fp")
        return out

    async def trades(self, *, ticker: str | None = None, min_ts: int | None = None, max_ts: int | None = None,
                     limit: int = 1000) -> list[PublicTrade]:
        """Public trades (all pages)."""
        params = {"ticker": ticker, "min_ts": min_ts, "max_ts": max_ts}
        return [t async for t in self._pages("/markets/trades", "trades", PublicTrade, params, limit=limit)]

    # -- portfolio ------------------------------------------------------------------------------

    async def balance(self) -> Balance:
        """Cash balance."""
        return await self._get("/portfolio/balance", Balance, auth=True)

    async def positions(self, *, ticker: str | None = None, event_ticker: str | None = None) -> list[MarketPosition]:
        """Unsettled market positions (all pages)."""
        params = {"ticker": ticker, "event_ticker": event_ticker}
        return [p async for p in self._pages("/portfolio/positions", "market_positions", MarketPosition, params,
                                             auth=True, limit=1000)]

    async def fills(self, *, ticker: str | None = None, order_id: str | None = None,
                    min_ts: int | None = None) -> list[Fill]:
        """Our fills (all pages)."""
        params = {"ticker": ticker, "order_id": order_id, "min_ts": min_ts}
        return [f async for f in self._pages("/portfolio/fills", "fills", Fill, params, auth=True, limit=1000)]

    async def settlements(self, *, ticker: str | None = None) -> list[SettlementRow]:
        """Our settled positions (all pages)."""
        return [s async for s in self._pages("/portfolio/settlements", "settlements", SettlementRow,
                                             {"ticker": ticker}, auth=True, limit=1000)]

    async def orders(self, *, ticker: str | None = None, status: str | None = None,
                     event_ticker: str | None = None, exchange_index: int | None = None) -> list[Order]:
        """Our orders (all pages), on one shard when `exchange_index` says which."""
        params = {"ticker": ticker, "status": status, "event_ticker": event_ticker, "exchange_index": exchange_index}
        return [o async for o in self._pages("/portfolio/orders", "orders", Order, params, auth=True, limit=1000)]

    async def order(self, order_id: str, *, exchange_index: int | None = None) -> Order:
        """One of our orders, read on its shard (shard 0 when `exchange_index` is None)."""
        return await self._get(f"/portfolio/orders/{order_id}", Order, key="order", auth=True,
                               params={"exchange_index": exchange_index})

    async def queue_position(self, order_id: str, *, exchange_index: int | None = None) -> QueuePosition:
        """Contracts ahead of one resting order, asked of its shard (shard 0 when `exchange_index` is None)."""
        resp = await self._request("GET", f"/portfolio/orders/{order_id}/queue_position", auth=True,
                                   params={"exchange_index": exchange_index})
        data = {"order_id": order_id, **_json(resp, "queue_position")}
        return _parse(QueuePosition, data, "queue_position", None)

    async def queue_positions(self, market_tickers: Sequence[str], *,
                              exchange_index: int | None = None) -> list[QueuePosition]:
        """Queue positions of our resting orders in these markets (`exchange_index`: their shard)."""
        resp = await self._request("GET", "/portfolio/orders/queue_positions",
                                   params={"market_tickers": ",".join(market_tickers),
                                           "exchange_index": exchange_index}, auth=True)
        return [_parse(QueuePosition, q, "queue_positions", "queue_positions")
                for q in _items(_json(resp, "queue_positions"), "queue_positions", "queue_positions")]

    # -- orders (V2) ----------------------------------------------------------------------------

    @staticmethod
    def order_body(ticker: str, side: BookSide, price: int, count: int, *, time_in_force: TimeInForce,
                   client_order_id: str | None = None, post_only: bool = False, reduce_only: bool = False,
                   expiration_time: datetime | None = None,
                   self_trade_prevention_type: Literal["taker_at_cross", "maker"] = "taker_at_cross",
                   cancel_order_on_pause: bool = False, exchange_index: int | None = None) -> dict[str, Any]:
        """A CreateOrderV2Request body; `side` bid buys YES, ask sells YES (buys NO); price is the YES price."""
        body: dict[str, Any] = {
            "ticker": ticker, "side": side, "count": format_count(count), "price": format_dollars(price),
            "time_in_force": time_in_force, "self_trade_prevention_type": self_trade_prevention_type,
        }
        if client_order_id:
            body["client_order_id"] = client_order_id
        if post_only:
            body["post_only"] = True
        if reduce_only:
            body["reduce_only"] = True
        if cancel_order_on_pause:
            body["cancel_order_on_pause"] = True
        if expiration_time is not None:
            body["expiration_time"] = int(expiration_time.timestamp())  # Unix seconds
        if exchange_index is not None:
            body["exchange_index"] = exchange_index
        return body

    async def create_order(self, ticker: str, side: BookSide, price: int, count: int, *,
                           time_in_force: TimeInForce = "good_till_canceled", client_order_id: str | None = None,
                           **options: Any) -> CreateOrderResult:
        """Place an order; retried on transient failures only when it has a client_order_id."""
        body = self.order_body(ticker, side, price, count, time_in_force=time_in_force,
                               client_order_id=client_order_id, **options)
        call = _Call(idempotent=client_order_id is not None, write=True)
        try:
            resp = await self._request("POST", CREATE_PATH, call=call, body=body, auth=True)
        except E.OrderAlreadyExists:
            if client_order_id is None:
                raise
            existing = await self.find_order(ticker, client_order_id, exchange_index=options.get("exchange_index"))
            if existing is None:
                raise
            log.info("order_already_placed", ticker=ticker, client_order_id=client_order_id,
                     order_id=existing.order_id)
            return CreateOrderResult(order_id=existing.order_id, client_order_id=client_order_id,
                                     fill_count=existing.fill_count, remaining_count=existing.remaining_count,
                                     already_existed=True)
        finally:
            if self._create_used is not None:
                self._create_used.set()
        return _parse(CreateOrderResult, _json(resp, "create_order"), "create_order", None)

    async def find_order(self, ticker: str, client_order_id: str, *,
                         exchange_index: int | None = None) -> Order | None:
        """Our order in `ticker` with this client_order_id, if any (reads every status, on `exchange_index`)."""
        for o in await self.orders(ticker=ticker, exchange_index=exchange_index):
            if o.client_order_id == client_order_id:
                return o
        return None

    async def cancel_order(self, order_id: str, *, ticker: str | None = None,
                           exchange_index: int | None = None) -> CancelResult:
        """Cancel one order, routed by its shard and/or market (neither: shard 0)."""
        resp = await self._request("DELETE", f"/portfolio/events/orders/{order_id}",
                                   call=_Call(idempotent=True, write=True, cost=CANCEL_COST),
                                   params={"market_ticker": ticker, "exchange_index": exchange_index}, auth=True)
        return _parse(CancelResult, _json(resp, "cancel_order"), "cancel_order", None)

    async def amend_order(self, order_id: str, *, ticker: str, side: BookSide, price: int, count: int,
                          client_order_id: str | None = None, updated_client_order_id: str | None = None,
                          exchange_index: int | None = None) -> AmendResult:
        """Amend price and/or total count (filled + desired remaining); only a pure decrease keeps priority."""
        body: dict[str, Any] = {"ticker": ticker, "side": side, "price": format_dollars(price),
                                "count": format_count(count)}
        if client_order_id:
            body["client_order_id"] = client_order_id
        if updated_client_order_id:
            body["updated_client_order_id"] = updated_client_order_id
        if exchange_index is not None:
            body["exchange_index"] = exchange_index
        resp = await self._request("POST", f"/portfolio/events/orders/{order_id}/amend",
                                   call=_Call(idempotent=True, write=True), body=body, auth=True)
        return _parse(AmendResult, _json(resp, "amend_order"), "amend_order", None)

    async def decrease_order(self, order_id: str, *, reduce_by: int | None = None, reduce_to: int | None = None,
                             ticker: str | None = None, exchange_index: int | None = None) -> DecreaseResult:
        """Reduce a resting order (keeps its queue priority); exactly one of reduce_by / reduce_to; routed by
        its shard and/or market (neither: shard 0)."""
        if (reduce_by is None) == (reduce_to is None):
            raise ValueError("give exactly one of reduce_by or reduce_to")
        body: dict[str, Any] = {"reduce_by": format_count(reduce_by)} if reduce_by is not None \
            else {"reduce_to": format_count(reduce_to)}  # type: ignore[arg-type]
        if ticker:
            body["market_ticker"] = ticker
        if exchange_index is not None:
            body["exchange_index"] = exchange_index
        resp = await self._request("POST", f"/portfolio/events/orders/{order_id}/decrease",
                                   call=_Call(idempotent=reduce_to is not None, write=True), body=body, auth=True)
        return _parse(DecreaseResult, _json(resp, "decrease_order"), "decrease_order", None)

    async def batch_create(self, orders: Sequence[Mapping[str, Any]]) -> list[BatchCreateItem]:
        """Create several orders (bodies from `order_body`); each item has a result or an error."""
        idempotent = all(o.get("client_order_id") for o in orders)
        resp = await self._request("POST", "/portfolio/events/orders/batched",
                                   call=_Call(idempotent=idempotent, write=True, cost=DEFAULT_COST * len(orders)),
                                   body={"orders": list(orders)}, auth=True)
        return [_parse(BatchCreateItem, o, "batch_create", "orders")
                for o in _items(_json(resp, "batch_create"), "orders", "batch_create")]

    async def batch_cancel(self, orders: Sequence[OrderRef]) -> list[BatchCancelItem]:
        """Cancel several orders; each item carries its own route (orders of several shards in one call)."""
        resp = await self._request("DELETE", "/portfolio/events/orders/batched",
                                   call=_Call(idempotent=True, write=True, cost=CANCEL_COST * len(orders)),
                                   body={"orders": [o.item() for o in orders]}, auth=True)
        return [_parse(BatchCancelItem, o, "batch_cancel", "orders")
                for o in _items(_json(resp, "batch_cancel"), "orders", "batch_cancel")]

    async def cancel_all(self) -> None:
        """Cancel every resting order (204)."""
        await self._request("DELETE", "/portfolio/events/orders", call=_Call(idempotent=True, write=True,
                                                                             cost=CANCEL_COST), auth=True)


# -- response handling --------------------------------------------------------------------------

_ORDER_ERRORS: dict[str, type[E.OrderRejected]] = {
    "order_already_exists": E.OrderAlreadyExists,
    "trading_is_paused": E.TradingPaused,
    "MARKET_INACTIVE": E.MarketInactive,
    "market_inactive": E.MarketInactive,
}


def _error_from(resp: httpx.Response, method: str, path: str) -> E.KalshiError:
    status = resp.status_code
    code = message = details = None
    try:
        body = resp.json()
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            # As text whatever they are: a code is looked up and matched (a list in it is unhashable).
            code, message, details = (None if v is None else str(v)
                                      for v in (err.get("code"), err.get("message"), err.get("details")))
        elif isinstance(err, str):
            message = err  # 429: {"error": "too many requests"}
    what = f"{method} {path} -> {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if details and details != message:
        what += f" ({details})"
    kw = {"status": status, "code": code, "details": details}
    if status == 429:
        return E.RateLimited(what + "; retries exhausted, slow down or raise the tier", **kw)
    if status == 401:
        return E.AuthError(what + "; check the key id, the private key file and that the clock is within 30 s",
                           **kw)
    if status == 403:
        return E.AuthError(what + "; the key lacks the scope or tier for this call", **kw)
    if status == 404:
        return E.NotFound(what, **kw)
    if status >= 500:
        return E.ServerError(what, **kw)
    cls = _ORDER_ERRORS.get(code or "")
    if cls is not None:
        return cls(what, **kw)
    if path.startswith("/portfolio/events/orders") or "order" in (code or ""):
        return E.OrderRejected(what, **kw)
    return E.KalshiError(what, **kw)


def _json(resp: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = resp.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the json module can read
        raise E.MalformedResponse(f"{what}: response is not JSON (status {resp.status_code})") from None
    if not isinstance(data, dict):
        raise E.MalformedResponse(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _items(data: dict[str, Any], key: str, where: str) -> list[Any]:
    """The list under `key` (absent, null or empty: none); anything else is a MalformedResponse, not a TypeError."""
    items = data.get(key)
    if not items:
        return []
    if not isinstance(items, list):
        raise E.MalformedResponse(f"{where}: '{key}' is a {type(items).__name__}, not a list")
    return items


def _parse(model: type[M], data: Any, where: str, key: str | None) -> M:
    if data is None:
        raise E.MalformedResponse(f"{where}: the response has no '{key}'")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or '(root)'}: {x['msg']}"
                             for x in e.errors(include_url=False))
        raise E.MalformedResponse(f"{where}: cannot read {model.__name__}: {problems}") from None
