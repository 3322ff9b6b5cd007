"""The simulator held to Kalshi's documented contract (issue 14).

A raw client (httpx + websockets, signing written here, nothing from libs/common/kalshi) drives the
simulated exchange over real sockets through every REST endpoint and WebSocket channel the desk
uses; every answer is validated against the strict models in `tests/kit/kalshi_contract.py`, which
are written from the API reference rather than from our client. Then the same captured answers,
with one required field removed or one format changed, must fail that validation: the check bites.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import time
import types
import typing
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ValidationError

from libs.common.money import PriceGrid
from services.sim.catalog import EventInfo, MarketInfo, SeriesInfo
from services.sim.ratelimit import Tier
from services.sim.server import SimExchange
from tests.kit import kalshi_contract as contract
from tests.kit.keys import public_pem, rsa_key
from tests.kit.sim import BTC_SHARD, BTC_TICKERS, EVENT, SERIES, TICKERS, hand_world

FUNDS = 10_000 * 10_000
FLOOR_SERIES = "KXGOVSHUT"
FLOOR_EVENT = "KXGOVSHUT-26NOV"
FLOOR_TICKER = f"{FLOOR_EVENT}-T10"
# The desk's WebSocket channels (feeds: books, trades, lifecycle; executor: fill, user_orders) and the
# two other public/private channels the simulator serves.
CHANNELS = ["orderbook_delta", "ticker", "trade", "fill", "user_orders", "market_positions", "market_lifecycle_v2"]
WS_TYPES = {"subscribed", "unsubscribed", "ok", "ok_list", "error", "orderbook_snapshot", "orderbook_delta", "ticker",
            "trade", "fill", "user_order", "market_position", "market_lifecycle_v2", "event_lifecycle"}


# -- an independent client --------------------------------------------------------------------------

def _sign(key: rsa.RSAPrivateKey, key_id: str, method: str, url: str) -> dict[str, str]:
    ts = str(int(time.time() * 1000))
    sig = key.sign(f"{ts}{method}{urlsplit(url).path}".encode(),
                   padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                   hashes.SHA256())
    return {"KALSHI-ACCESS-KEY": key_id, "KALSHI-ACCESS-TIMESTAMP": ts,
            "KALSHI-ACCESS-SIGNATURE": base64.b64encode(sig).decode()}


def _route_patterns() -> list[tuple[re.Pattern[str], str]]:
    # Literal paths before templated ones (/markets/trades before /markets/{ticker}).
    routes = sorted(contract.REST, key=lambda r: (r.count("{"), -len(r)))
    out = []
    for r in routes:
        method, path = r.split(" ", 1)
        rx = re.escape(path).replace(r"\{ticker\}", "[^/]+").replace(r"\{order_id\}", "[^/]+")
        out.append((re.compile(f"^{method} {rx}$"), r))
    return out


_ROUTES = _route_patterns()


def route_of(method: str, path: str) -> str:
    """The contract's route key for a concrete request."""
    target = f"{method} {path}"
    for rx, route in _ROUTES:
        if rx.match(target):
            return route
    raise KeyError(f"no contract for {target}")


@dataclass
class Recorder:
    """Every answer seen, by route / message type, and every contract violation."""

    rest: dict[str, list[tuple[int, Any]]] = field(default_factory=lambda: defaultdict(list))
    ws: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    violations: list[str] = field(default_factory=list)

    def check_rest(self, route: str, status: int, body: Any) -> None:
        self.rest[route].append((status, body))
        try:
            contract.validate_rest(route, status, body)
        except (ValidationError, ValueError) as e:
            self.violations.append(f"{route} ({status}): {e}")

    def check_ws(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type", "?")
        if kind == "ok" and isinstance(frame.get("msg"), list):
            kind = "ok_list"
        self.ws[kind].append(frame)
        try:
            contract.validate_ws(frame)
        except (ValidationError, ValueError) as e:
            self.violations.append(f"ws {kind}: {e}")


@dataclass
class User:
    name: str
    key_id: str
    key: rsa.RSAPrivateKey


@dataclass
class Rig:
    exchange: SimExchange
    http: httpx.AsyncClient
    rec: Recorder
    alice: User
    bob: User

    async def call(self, method: str, path: str, user: User | None = None, *, body: Any = None,
                   params: Any = None) -> Any:
        """One REST call, validated; returns (status, parsed body)."""
        url = self.exchange.rest_url + path
        headers = _sign(user.key, user.key_id, method, url) if user else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        r = await self.http.request(method, url, headers=headers, params=params,
                                    content=json.dumps(body).encode() if body is not None else None)
        data = r.json() if r.content else None
        self.rec.check_rest(route_of(method, path), r.status_code, data)
        return r.status_code, data

    async def order(self, user: User, ticker: str, side: str, price: str, count: str, **extra: Any) -> Any:
        body = {"ticker": ticker, "side": side, "price": price, "count": count, "time_in_force": "good_till_canceled",
                "self_trade_prevention_type": "taker_at_cross", "client_order_id": str(uuid.uuid4()), **extra}
        status, data = await self.call("POST", "/portfolio/events/orders", user, body=body)
        assert status == 201, data
        return data


class Feed:
    """A WebSocket connection whose every frame is validated as it arrives."""

    def __init__(self, ws: Any, rec: Recorder) -> None:
        self.ws = ws
        self.rec = rec
        self._id = 0
        self.buffer: list[dict[str, Any]] = []

    async def send(self, cmd: str, params: dict[str, Any] | None = None) -> int:
        self._id += 1
        await self.ws.send(json.dumps({"id": self._id, "cmd": cmd, **({"params": params} if params else {})}))
        return self._id

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.rec.check_ws(frame)
        return frame

    async def wait(self, kind: str, pred: Any = None, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of `kind` (matching `pred`), keeping the others in `buffer`."""
        for i, f in enumerate(self.buffer):
            if f["type"] == kind and (pred is None or pred(f)):
                return self.buffer.pop(i)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            f = await self.next(max(0.05, deadline - asyncio.get_running_loop().time()))
            if f["type"] == kind and (pred is None or pred(f)):
                return f
            self.buffer.append(f)

    async def drain(self, quiet_s: float = 0.2) -> None:
        """Read (and validate) whatever is queued until the connection is quiet."""
        with pytest.raises(TimeoutError):
            while True:
                self.buffer.append(await self.next(quiet_s))


def contract_world() -> Any:
    """The hand-built world plus a settlement-floor market on a tapered deci-cent grid."""
    world = hand_world()
    now = datetime.now(UTC)
    world.catalog.series[SERIES].categories = ["Climate and Weather", "Daily"]
    floor_series = SeriesInfo(ticker=FLOOR_SERIES, title="Government shutdown length", category="Politics",
                              frequency="monthly", fee_type="quadratic_with_maker_fees",
                              settlement_sources=[{"name": "OPM", "url": "https://www.opm.gov"}])
    world.catalog.add_series(floor_series)
    world.catalog.add_event(EventInfo(event_ticker=FLOOR_EVENT, series_ticker=FLOOR_SERIES,
                                      title="How long will the shutdown last?", mutually_exclusive=False))
    tapered = PriceGrid.from_api([{"start": "0.0000", "end": "0.1000", "step": "0.0010"},
                                  {"start": "0.1000", "end": "0.9000", "step": "0.0100"},
                                  {"start": "0.9000", "end": "1.0000", "step": "0.0010"}])
    info = MarketInfo(ticker=FLOOR_TICKER, event_ticker=FLOOR_EVENT, series_ticker=FLOOR_SERIES,
                      title="Shutdown of 10 days or more", yes_sub_title="10 days", no_sub_title="10 days",
                      strike_type="greater_or_equal", floor_strike=Decimal(10), cap_strike=None,
                      open_time=now - timedelta(hours=1), close_time=now + timedelta(days=30),
                      expected_expiration_time=None, latest_expiration_time=now + timedelta(days=40), grid=tapered,
                      price_level_structure="tapered_deci_cent", rules_primary="Pays $0.10 per day of shutdown.",
                      settlement_bounds_type="floor", settlement_floor=3000)
    world.catalog.add_market(info)
    world.engine.add_market(info.spec(floor_series))
    world.engine.set_status(FLOOR_TICKER, "active")
    return world


@pytest.fixture(scope="module")
async def exercised() -> AsyncIterator[Recorder]:
    """Drive every endpoint and channel once; the recorder holds what came back."""
    exchange = SimExchange(contract_world())
    users = []
    for name in ("alice", "bob"):
        u = User(name, f"key-contract-{name}", rsa_key(f"contract-{name}"))
        exchange.register_key(u.key_id, public_pem(u.key), name, balance=FUNDS)
        users.append(u)
    await exchange.start()
    rec = Recorder()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            rig = Rig(exchange, http, rec, *users)
            await _drive(rig)
    finally:
        await exchange.stop()
    yield rec


async def _connect(rig: Rig, user: User) -> Any:
    url = rig.exchange.ws_url
    return await websockets.connect(url, additional_headers=_sign(user.key, user.key_id, "GET", url))


async def _drive(rig: Rig) -> None:
    a, b = rig.alice, rig.bob
    t1, t2, t3 = TICKERS[1], TICKERS[2], TICKERS[3]
    async with await _connect(rig, a) as wa, await _connect(rig, b) as wb:
        fa, fb = Feed(wa, rig.rec), Feed(wb, rig.rec)
        await fa.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": [t1, FLOOR_TICKER]})
        await fa.send("subscribe", {"channels": ["ticker"], "market_tickers": [t1, FLOOR_TICKER],
                                    "send_initial_snapshot": True})
        await fa.send("subscribe", {"channels": ["trade", "fill", "user_orders", "market_positions",
                                                 "market_lifecycle_v2"]})
        await fb.send("subscribe", {"channels": ["fill", "user_orders", "market_positions"]})
        await fa.send("subscribe", {"channels": ["market_lifecycle"]})  # the retired name: error 8
        await fa.drain()
        await fb.drain()

        # Public catalog.
        for path, params in (("/exchange/status", None), ("/exchange/schedule", None), ("/series/fee_changes", None),
                             ("/series", None), ("/series", {"category": "Daily"}),
                             (f"/series/{SERIES}", {"include_volume": "true"}), (f"/series/{FLOOR_SERIES}", None),
                             ("/events", {"with_nested_markets": "true", "with_milestones": "true"}),
                             ("/events", {"limit": 1}), (f"/events/{EVENT}", None),
                             (f"/events/{FLOOR_EVENT}", {"with_nested_markets": "true"}),
                             ("/markets", {"limit": 3}), ("/markets", {"status": "open", "limit": 1000})):
            status, data = await rig.call("GET", path, params=params)
            assert status == 200, (path, data)
        _, listed = await rig.call("GET", "/series", params={"category": "Daily"})
        assert [s["ticker"] for s in listed["series"]] == [SERIES]  # `category` matches any of `categories`
        for t in [*TICKERS, *BTC_TICKERS, FLOOR_TICKER]:
            status, _ = await rig.call("GET", f"/markets/{t}")
            assert status == 200
        assert (await rig.call("GET", "/account/limits", a))[0] == 200

        # Trading: a resting maker, a crossing taker, books, tape, portfolio.
        assert (await rig.call("GET", "/portfolio/balance", a))[0] == 200
        maker = await rig.order(a, t1, "bid", "0.42", "10")
        expiring = await rig.order(a, t2, "bid", "0.10", "1",
                                   expiration_time=int(time.time()) + 3600)
        taker = await rig.order(b, t1, "ask", "0.40", "4", time_in_force="immediate_or_cancel")
        assert taker["fill_count"] == "4.00" and taker["average_fill_price"] == "0.4200"
        await rig.order(b, t1, "ask", "0.55", "3")  # a resting NO bid: both sides of the book
        await rig.order(a, FLOOR_TICKER, "bid", "0.055", "2")  # sub-cent on the tapered grid
        await rig.order(b, FLOOR_TICKER, "ask", "0.95", "2.5")
        await fa.wait("fill")
        await fb.wait("fill")
        await fa.wait("market_position")
        await fa.wait("orderbook_delta")
        await fa.wait("ticker")
        await fa.wait("trade")
        await fa.wait("user_order", lambda f: f["msg"]["order_id"] == expiring["order_id"])
        for path, params in ((f"/markets/{t1}/orderbook", None), (f"/markets/{FLOOR_TICKER}/orderbook", {"depth": 1}),
                             ("/markets/orderbooks", {"tickers": f"{t1},{t2},{FLOOR_TICKER}"}),
                             ("/markets/trades", {"ticker": t1}), ("/markets/trades", None), (f"/markets/{t1}", None)):
            assert (await rig.call("GET", path, params=params))[0] == 200
        for user in (a, b):
            for path, params in (("/portfolio/balance", None), ("/portfolio/positions", None),
                                 ("/portfolio/positions", {"count_filter": "position"}), ("/portfolio/fills", None),
                                 ("/portfolio/orders", None), ("/portfolio/orders", {"status": "resting"}),
                                 ("/portfolio/settlements", None)):
                assert (await rig.call("GET", path, user, params=params))[0] == 200
        oid = maker["order_id"]
        for path, params in ((f"/portfolio/orders/{oid}", None), (f"/portfolio/orders/{oid}/queue_position", None),
                             ("/portfolio/orders/queue_positions", {"market_tickers": t1})):
            assert (await rig.call("GET", path, a, params=params))[0] == 200
        # Order writes.
        path = f"/portfolio/events/orders/{oid}"
        assert (await rig.call("POST", f"{path}/decrease", a, body={"reduce_by": "1"}))[0] == 200
        assert (await rig.call("POST", f"/portfolio/events/orders/{oid}/amend", a,
                               body={"ticker": t1, "side": "bid", "price": "0.43", "count": "9"}))[0] == 200
        assert (await rig.call("DELETE", f"/portfolio/events/orders/{oid}", a))[0] == 200
        good = {"ticker": t3, "side": "bid", "price": "0.10", "count": "1", "time_in_force": "good_till_canceled",
                "self_trade_prevention_type": "taker_at_cross"}
        status, batch = await rig.call("POST", "/portfolio/events/orders/batched", a,
                                       body={"orders": [good, {**good, "price": "0.105"}]})
        assert status == 201 and batch["orders"][1]["error"] is not None
        first = batch["orders"][0]["order_id"]
        status, _ = await rig.call("DELETE", "/portfolio/events/orders/batched", a,
                                   body={"orders": [{"order_id": first}, {"order_id": "nope"}]})
        assert status == 200
        await _drive_shards(rig)
        await rig.order(a, t3, "bid", "0.11", "1")
        assert (await rig.call("DELETE", "/portfolio/events/orders", a))[0] == 204
        # Error answers keep Kalshi's error shape.
        assert (await rig.call("GET", "/markets/KXNOPE-26NOV23-T1"))[0] == 404
        assert (await rig.call("POST", "/portfolio/events/orders", a, body={"ticker": t1}))[0] == 400
        dup = str(uuid.uuid4())
        await rig.order(a, t3, "bid", "0.12", "1", client_order_id=dup)
        assert (await rig.call("POST", "/portfolio/events/orders", a, body={
            **good, "price": "0.12", "client_order_id": dup}))[0] == 409

        # Subscription management replies.
        book_sid = next(f["msg"]["sid"] for f in rig.rec.ws["subscribed"] if f["msg"]["channel"] == "orderbook_delta")
        await fa.send("update_subscription", {"sids": [book_sid], "market_tickers": [t2], "action": "add_markets"})
        await fa.wait("ok")
        await fa.wait("orderbook_snapshot", lambda f: f["msg"]["market_ticker"] == t2)
        await fa.send("update_subscription", {"sids": [book_sid], "market_tickers": [t1], "action": "get_snapshot"})
        await fa.wait("ok")
        await fa.send("list_subscriptions")
        await fa.wait("ok", lambda f: isinstance(f["msg"], list))

        # Lifecycle: a new event and market, pause and resume, an early close, determination and payout.
        world = rig.exchange.world
        now = datetime.now(UTC)
        new_event = "KXHIGHNY-26NOV24"
        world.catalog.add_event(EventInfo(event_ticker=new_event, series_ticker=SERIES, title="NYC high Nov 24",
                                          strike_date=now + timedelta(days=2)))
        new = MarketInfo(ticker=f"{new_event}-T60", event_ticker=new_event, series_ticker=SERIES, title="NYC high",
                         yes_sub_title="61° or above", no_sub_title="60° or below", strike_type="greater",
                         floor_strike=Decimal(60), cap_strike=None, open_time=now, close_time=now + timedelta(days=1),
                         expected_expiration_time=now + timedelta(days=1, hours=14),
                         latest_expiration_time=now + timedelta(days=8), grid=PriceGrid.linear_cent())
        world.catalog.add_market(new)
        world.engine.add_market(new.spec(world.catalog.series[SERIES]))
        rig.exchange.tick()
        await fa.wait("event_lifecycle")
        await fa.wait("market_lifecycle_v2", lambda f: f["msg"]["event_type"] == "created")
        world.engine.set_status(new.ticker, "active")
        world.engine.set_status(new.ticker, "inactive")
        world.engine.set_status(new.ticker, "active")
        await rig.order(a, new.ticker, "bid", "0.70", "2")
        await rig.order(b, new.ticker, "ask", "0.70", "2")
        world.engine.set_status(new.ticker, "closed")
        world.engine.settle(new.ticker, "yes")
        await fa.wait("market_lifecycle_v2", lambda f: f["msg"]["event_type"] == "settled")
        for path in (f"/markets/{new.ticker}", f"/events/{new_event}"):
            assert (await rig.call("GET", path))[0] == 200
        assert (await rig.call("GET", "/markets", params={"status": "settled"}))[0] == 200
        for user in (a, b):
            assert (await rig.call("GET", "/portfolio/settlements", user))[0] == 200
            assert (await rig.call("GET", "/portfolio/balance", user))[0] == 200

        await fa.send("unsubscribe", {"sids": [book_sid]})
        await fa.wait("unsubscribed")
        await fa.drain()
        await fb.drain()


async def _drive_shards(rig: Rig) -> None:
    """A BTC market (exchange index 2): every order call with its route, the reads narrowed to the shard,
    and the unrouted calls that reach shard 0 and answer 404 (kalshi_api.md §3.12)."""
    a, b = rig.alice, rig.bob
    btc, shard = BTC_TICKERS[0], BTC_SHARD
    bid = (await rig.order(a, btc, "bid", "0.20", "3", exchange_index=shard))["order_id"]
    await rig.order(b, btc, "ask", "0.20", "1", exchange_index=shard, time_in_force="immediate_or_cancel")
    for path, params in ((f"/portfolio/orders/{bid}", {"exchange_index": shard}),
                         (f"/portfolio/orders/{bid}/queue_position", {"exchange_index": shard}),
                         ("/portfolio/orders", {"ticker": btc, "exchange_index": shard}),
                         ("/portfolio/orders", {"exchange_index": shard, "status": "resting"}),
                         ("/portfolio/orders/queue_positions", {"market_tickers": btc, "exchange_index": shard}),
                         ("/portfolio/balance", {"exchange_index": shard}),
                         ("/portfolio/positions", {"exchange_index": shard}),
                         ("/portfolio/fills", {"ticker": btc, "exchange_index": -1}),
                         ("/portfolio/settlements", {"exchange_index": shard})):
        assert (await rig.call("GET", path, a, params=params))[0] == 200, path
    # Neither index nor market: shard 0 answers, and it does not know the order.
    path = f"/portfolio/events/orders/{bid}"
    for method, p, body in (("DELETE", path, None), ("GET", f"/portfolio/orders/{bid}", None),
                            ("POST", f"{path}/decrease", {"reduce_by": "1"})):
        status, err = await rig.call(method, p, a, body=body)
        assert status == 404 and err["error"]["code"] == "not_found", (method, p, err)
    assert (await rig.call("POST", f"{path}/decrease", a,
                           body={"reduce_by": "1", "exchange_index": shard, "market_ticker": btc}))[0] == 200
    assert (await rig.call("POST", f"{path}/amend", a, body={
        "ticker": btc, "side": "bid", "price": "0.21", "count": "3", "exchange_index": shard}))[0] == 200
    assert (await rig.call("DELETE", path, a, params={"exchange_index": shard, "market_ticker": btc}))[0] == 200
    other = (await rig.order(a, btc, "bid", "0.19", "1", exchange_index=shard))["order_id"]
    status, batch = await rig.call("DELETE", "/portfolio/events/orders/batched", a, body={"orders": [
        {"order_id": other}, {"order_id": other, "exchange_index": shard, "market_ticker": btc}]})
    assert status == 200 and batch["orders"][0]["error"]["code"] == "not_found"
    assert batch["orders"][1]["error"] is None and batch["orders"][1]["reduced_by"] == "1.00"


# -- the contract holds -----------------------------------------------------------------------------

async def test_simulator_answers_meet_the_documented_contract(exercised: Recorder) -> None:
    assert exercised.violations == [], "\n".join(exercised.violations)


async def test_every_endpoint_and_channel_was_checked(exercised: Recorder) -> None:
    ok_routes = {r for r, answers in exercised.rest.items() if any(200 <= s < 300 for s, _ in answers)}
    assert set(contract.REST) - ok_routes == set(), "routes never validated with a 2xx answer"
    assert WS_TYPES - set(exercised.ws) == set(), "WebSocket message types never seen"
    kinds = {f["msg"]["event_type"] for f in exercised.ws["market_lifecycle_v2"]}
    assert {"created", "deactivated", "activated", "close_date_updated", "determined", "settled"} <= kinds
    channels = {f["msg"]["channel"] for f in exercised.ws["subscribed"]}
    assert set(CHANNELS) <= channels
    error_statuses = {s for answers in exercised.rest.values() for s, _ in answers if s >= 400}
    assert {400, 404, 409} <= error_statuses


async def test_shards_are_reported_where_the_reference_says(exercised: Recorder) -> None:
    """`balance_breakdown` per funded shard, summing to the balance; `exchange_index` on orders, fills,
    positions and private fills of the BTC market (2) and the weather markets (0)."""
    balances = [body for status, body in exercised.rest["GET /portfolio/balance"] if status == 200]
    assert balances and all([b["exchange_index"] for b in body["balance_breakdown"]] == [0, BTC_SHARD]
                            for body in balances)
    whole = [body for body in balances if len(body["balance_breakdown"]) == 2 and body["balance_dollars"] == str(
        sum(Decimal(b["balance"]) for b in body["balance_breakdown"]))]
    assert whole, "a balance without exchange_index is the sum of its breakdown"
    shard_of = {t: BTC_SHARD for t in BTC_TICKERS} | {t: 0 for t in TICKERS}

    def seen(rows: list[dict[str, Any]], key: str) -> set[tuple[str, int]]:
        return {(r[key], r["exchange_index"]) for r in rows if r[key] in shard_of}

    orders = [o for _, body in exercised.rest["GET /portfolio/orders"] for o in body.get("orders", [])]
    fills = [f for _, body in exercised.rest["GET /portfolio/fills"] for f in body.get("fills", [])]
    positions = [p for _, body in exercised.rest["GET /portfolio/positions"] for p in body.get("market_positions", [])]
    ws_fills = [f["msg"] for f in exercised.ws["fill"]]
    for rows, key in ((orders, "ticker"), (fills, "ticker"), (positions, "ticker"), (ws_fills, "market_ticker")):
        got = seen(rows, key)
        assert all(shard_of[t] == i for t, i in got), got
        assert {i for _, i in got} == {0, BTC_SHARD}, (key, got)


def _market(rec: Recorder, ticker: str) -> dict[str, Any]:
    return next(body["market"] for status, body in rec.rest["GET /markets/{ticker}"]
                if status == 200 and body["market"]["ticker"] == ticker)


async def test_markets_carry_settlement_bounds_everywhere(exercised: Recorder) -> None:
    floor = _market(exercised, FLOOR_TICKER)
    assert floor["settlement_bounds_type"] == "floor" and floor["settlement_floor_dollars"] == "0.3000"
    weather = _market(exercised, TICKERS[0])
    assert weather["settlement_bounds_type"] == "default" and "settlement_floor_dollars" not in weather
    listed = [m for _, body in exercised.rest["GET /markets"] for m in body["markets"]]
    nested = [m for _, body in exercised.rest["GET /events/{ticker}"] if "markets" in body
              for m in [*body["markets"], *body["event"].get("markets", [])]]
    nested += [m for _, body in exercised.rest["GET /events"] for e in body["events"] for m in e.get("markets", [])]
    assert listed and nested
    assert all(m["settlement_bounds_type"] in ("default", "floor") for m in listed + nested)


async def test_429_body_meets_the_contract() -> None:
    tiny = Tier("tiny", read_per_s=1, write_per_s=1, read_capacity=10, write_capacity=10)
    exchange = SimExchange(contract_world(), rate_limit=tiny)
    u = User("carol", "key-contract-carol", rsa_key("contract-carol"))
    exchange.register_key(u.key_id, public_pem(u.key), u.name, balance=FUNDS)
    await exchange.start()
    rec = Recorder()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            rig = Rig(exchange, http, rec, u, u)
            assert (await rig.call("GET", "/account/limits", u))[0] == 200
            assert (await rig.call("GET", "/portfolio/balance", u))[0] == 429
    finally:
        await exchange.stop()
    assert rec.violations == []


# -- the check bites --------------------------------------------------------------------------------

def _nested(annotation: Any) -> type[BaseModel] | None:
    """The Strict model inside an annotation (through Optional, list, Annotated), if any."""
    if isinstance(annotation, type) and issubclass(annotation, contract.Strict):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _nested(arg)
            if found is not None:
                return found
    return None


def _holes(model: type[BaseModel], data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of every required key in `data` (recursively through nested models), to be removed one by one."""
    if isinstance(data, list):
        if data:
            yield from _holes(model, data[0], (*path, 0))
        return
    if not isinstance(data, dict):
        return
    for name, f in model.model_fields.items():
        if f.is_required() and name in data:
            yield (*path, name)
        inner = _nested(f.annotation)
        if inner is not None and name in data:
            yield from _holes(inner, data[name], (*path, name))


def _without(body: Any, path: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(body)
    node = out
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return out


def _samples(rec: Recorder) -> Iterator[tuple[str, type[BaseModel], Any, Any]]:
    """(name, model, body, validate) for one 2xx answer per route and one frame per WS type."""
    for route, answers in sorted(rec.rest.items()):
        model = contract.REST[route]
        bodies = [b for s, b in answers if 200 <= s < 300 and b is not None]
        if model is None or not bodies:
            continue
        # The richest answer: the one with the most text (non-empty lists, nested markets).
        body = max(bodies, key=lambda b: len(json.dumps(b)))
        yield route, model, body, lambda b, r=route: contract.validate_rest(r, 200, b)
    for kind, frames in sorted(rec.ws.items()):
        frame = max(frames, key=lambda f: len(json.dumps(f)))
        if kind == "ok_list":  # known to answer list_subscriptions: hold it to that shape
            yield "ws ok_list", contract.OkList, frame, contract.OkList.model_validate
            continue
        model = contract.OkUpdate if kind == "ok" else contract.WS[kind]
        yield f"ws {kind}", model, frame, contract.validate_ws


async def test_removing_any_required_field_fails_validation(exercised: Recorder) -> None:
    checked, survivors = 0, []
    for name, model, body, validate in _samples(exercised):
        validate(body)  # the untouched answer passes
        for path in _holes(model, body):
            checked += 1
            try:
                validate(_without(body, path))
            except ValidationError:
                continue
            survivors.append(f"{name}: without {'.'.join(map(str, path))}")
    assert survivors == [], "removing these required fields went unnoticed:\n" + "\n".join(survivors)
    assert checked > 300  # every model's required keys, not a token few


def _mutated(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node: Any = out
    steps = [int(s) if s.isdigit() else s for s in path.split(".")]
    for step in steps[:-1]:
        node = node[step]
    if value is _DROP:
        del node[steps[-1]]
    else:
        node[steps[-1]] = value
    return out


_DROP = object()
# (route or ws type, dotted path, bad value): the faults an API change or a simulator bug would bring.
FORMAT_FAULTS = [
    ("GET /markets/{ticker}", "market.settlement_bounds_type", _DROP),
    ("GET /markets/{ticker}", "market.settlement_bounds_type", "none"),
    ("GET /markets/{ticker}", "market.yes_bid_dollars", "42"),  # cents, not dollars
    ("GET /markets/{ticker}", "market.yes_bid_dollars", 0.42),  # a number, not a string
    ("GET /markets/{ticker}", "market.last_price_dollars", "0.42"),  # 2 decimals, not 4
    ("GET /markets/{ticker}", "market.volume_fp", "10"),  # a count without decimals
    ("GET /markets/{ticker}", "market.open_interest_fp", 10),
    ("GET /markets/{ticker}", "market.status", "open"),  # the filter word, not the status
    ("GET /markets/{ticker}", "market.price_ranges", []),
    ("GET /markets/{ticker}", "market.price_ranges.0.step", "0.01"),
    ("GET /markets/{ticker}", "market.close_time", 1_700_000_000),
    ("GET /markets/{ticker}", "market.close_time", "2026-11-23 05:00:00"),  # no T, no zone
    ("GET /markets/{ticker}", "market.expiration_time", None),  # optional, but never null
    ("GET /markets/{ticker}", "market.yes_ask_dollars", "0.0100"),  # breaks yes_ask = 1 - no_bid
    ("GET /series/{ticker}", "series.fee_type", _DROP),
    ("GET /series/{ticker}", "series.fee_type", "quadratic_v2"),
    ("GET /series/{ticker}", "series.fee_multiplier", "1"),
    ("GET /series/{ticker}", "series.categories", _DROP),
    ("GET /events/{ticker}", "event.collateral_return_type", "binary"),
    ("GET /events/{ticker}", "event.settlement_sources", _DROP),
    ("GET /portfolio/balance", "balance", "1000"),
    ("GET /portfolio/balance", "balance_dollars", 10.0),
    ("GET /portfolio/balance", "balance_breakdown", None),  # optional, but never null
    ("GET /portfolio/balance", "balance_breakdown.0.exchange_index", "0"),
    ("GET /portfolio/balance", "balance_breakdown.0.balance", 5000.0),
    ("GET /portfolio/balance", "balance_breakdown.1.exchange_index", 0),  # one entry per shard
    ("GET /portfolio/orders", "orders.0.exchange_index", None),
    ("GET /portfolio/orders/{order_id}", "order.exchange_index", "2"),
    ("GET /portfolio/positions", "market_positions.0.exchange_index", _DROP),
    ("GET /portfolio/fills", "fills.0.exchange_index", _DROP),
    ("GET /markets/{ticker}", "market.exchange_index", None),
    ("ws fill", "msg.exchange_index", _DROP),
    ("GET /portfolio/positions", "market_positions.0.position_fp", "-4"),
    ("GET /portfolio/fills", "fills.0.fee_cost", "1"),
    ("GET /portfolio/fills", "fills.0.fill_id", "someone-else"),
    ("GET /portfolio/orders", "orders.0.status", "pending"),  # removed 2025-11
    ("GET /portfolio/settlements", "settlements.0.revenue", "200"),
    ("POST /portfolio/events/orders", "fill_count", 4),
    ("GET /markets/{ticker}/orderbook", "orderbook_fp.yes_dollars.0.0", "42"),
    ("ws fill", "msg.count_fp", "3"),
    ("ws fill", "msg.trade_id", "not-a-uuid"),
    ("ws user_order", "msg.order_group_id", None),
    ("ws user_order", "msg.status", "pending"),
    ("ws orderbook_delta", "msg.delta_fp", "-5"),
    ("ws orderbook_delta", "seq", _DROP),
    ("ws orderbook_snapshot", "msg.market_id", "KXHIGHNY"),
    ("ws market_lifecycle_v2", "msg.event_type", "opened"),
    ("ws ticker", "msg.dollar_volume", "12"),
    ("ws trade", "msg.yes_price_dollars", "36"),
]


@pytest.mark.parametrize(("where", "path", "value"), FORMAT_FAULTS,
                         ids=[f"{w}:{p}={'drop' if v is _DROP else v!r}" for w, p, v in FORMAT_FAULTS])
async def test_format_faults_fail_validation(exercised: Recorder, where: str, path: str, value: Any) -> None:
    samples = {name: (body, validate) for name, _, body, validate in _samples(exercised)}
    body, validate = samples[where]
    validate(body)
    with pytest.raises(ValidationError):
        validate(_mutated(body, path, value))
