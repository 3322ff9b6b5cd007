"""The simulated exchange seen by an independent client: raw httpx + websockets, signing written here.

Nothing from libs/common/kalshi is used, so a bug shared by our client and our simulator cannot
hide: the wire format checked here is Kalshi's (kalshi_api.md §2–§4, §7).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest
import websockets
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from websockets.exceptions import ConnectionClosed, InvalidStatus

from libs.common.matching.engine import MatchingEngine
from libs.common.money import PriceGrid
from services.sim.catalog import Catalog, EventInfo, MarketInfo, SeriesInfo
from services.sim.ratelimit import Tier
from services.sim.server import SimExchange

SERIES = "KXHIGHNY"
EVENT = "KXHIGHNY-26OCT04"
MARKETS = [f"{EVENT}-T63", f"{EVENT}-B63.5", f"{EVENT}-B65.5", f"{EVENT}-T66"]
FUNDS = 1_000 * 10_000  # $1,000 in $0.0001 ticks


# -- an independent signer: Kalshi's documented recipe, nothing shared with our client -------------

@dataclass
class RawKey:
    key_id: str
    private: rsa.RSAPrivateKey

    @classmethod
    def new(cls) -> RawKey:
        return cls(str(uuid.uuid4()), rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def headers(self, method: str, url: str, *, ts_ms: int | None = None) -> dict[str, str]:
        ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
        path = urlsplit(url).path  # from the host root, query excluded
        sig = self.private.sign(f"{ts}{method}{path}".encode(),
                                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                                hashes.SHA256())
        return {"KALSHI-ACCESS-KEY": self.key_id, "KALSHI-ACCESS-TIMESTAMP": ts,
                "KALSHI-ACCESS-SIGNATURE": base64.b64encode(sig).decode()}


@dataclass
class HandWorld:
    """The parts of a World the exchange uses, built by hand."""

    engine: MatchingEngine
    catalog: Catalog
    clock: Any


def build_world() -> HandWorld:
    now = datetime.now(UTC)
    clock = lambda: datetime.now(UTC)  # noqa: E731
    engine = MatchingEngine(clock)
    catalog = Catalog()
    series = SeriesInfo(ticker=SERIES, title="Highest temperature in NYC", category="Climate and Weather",
                        frequency="daily", settlement_sources=[{"name": "NWS", "url": "https://weather.gov"}])
    catalog.add_series(series)
    catalog.add_event(EventInfo(event_ticker=EVENT, series_ticker=SERIES, title="High temp in NYC on Oct 4"))
    bounds = [(None, Decimal(63)), (Decimal("63"), Decimal("64")), (Decimal("65"), Decimal("66")), (Decimal(66), None)]
    for ticker, (floor, cap) in zip(MARKETS, bounds, strict=True):
        kind = "less" if floor is None else "greater" if cap is None else "between"
        info = MarketInfo(ticker=ticker, event_ticker=EVENT, series_ticker=SERIES, title="NYC high",
                          yes_sub_title=ticker.rsplit("-", 1)[1], no_sub_title=ticker.rsplit("-", 1)[1],
                          strike_type=kind, floor_strike=floor, cap_strike=cap,
                          open_time=now - timedelta(hours=1), close_time=now + timedelta(days=1),
                          expected_expiration_time=now + timedelta(days=1, hours=14),
                          latest_expiration_time=now + timedelta(days=8), grid=PriceGrid.linear_cent(),
                          rules_primary="If the high is ...")
        catalog.add_market(info)
        engine.add_market(info.spec(series))
        engine.set_status(ticker, "active")
    return HandWorld(engine, catalog, clock)


@dataclass
class Rig:
    exchange: SimExchange
    alice: RawKey
    bob: RawKey
    http: httpx.AsyncClient

    async def call(self, method: str, path: str, key: RawKey | None = None, *, body: Any = None,
                   params: dict[str, Any] | None = None) -> httpx.Response:
        url = self.exchange.rest_url + path
        headers = key.headers(method, url) if key is not None else {}
        content = json.dumps(body).encode() if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        return await self.http.request(method, url, headers=headers, content=content, params=params)

    async def order(self, key: RawKey, ticker: str, side: str, price: str, count: str, **extra: Any
                    ) -> httpx.Response:
        body = {"ticker": ticker, "side": side, "price": price, "count": count,
                "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross",
                "client_order_id": str(uuid.uuid4()), **extra}
        return await self.call("POST", "/portfolio/events/orders", key, body=body)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    exchange = SimExchange(build_world())
    alice, bob = RawKey.new(), RawKey.new()
    exchange.register_key(alice.key_id, alice.public_pem(), "alice", balance=FUNDS)
    exchange.register_key(bob.key_id, bob.public_pem(), "bob", balance=FUNDS)
    await exchange.start()
    async with httpx.AsyncClient(timeout=10) as http:
        yield Rig(exchange, alice, bob, http)
    await exchange.stop()


def _is_dollars(v: Any) -> bool:
    return isinstance(v, str) and len(v.split(".")[-1]) == 4 and Decimal(v) >= 0


def _is_count(v: Any) -> bool:
    return isinstance(v, str) and len(v.split(".")[-1]) == 2


# -- REST -------------------------------------------------------------------------------------------

async def test_create_order_v2_answers_201_with_kalshi_fields(rig: Rig) -> None:
    coid = str(uuid.uuid4())
    r = await rig.order(rig.alice, MARKETS[1], "bid", "0.42", "10", client_order_id=coid)
    assert r.status_code == 201, r.text
    data = r.json()
    assert isinstance(data["order_id"], str) and data["order_id"]
    assert data["client_order_id"] == coid
    assert data["fill_count"] == "0.00" and data["remaining_count"] == "10.00"
    assert isinstance(data["ts_ms"], int) and abs(data["ts_ms"] - time.time() * 1000) < 60_000
    assert "average_fill_price" not in data  # only when something filled


async def test_orders_list_and_get_have_order_fields(rig: Rig) -> None:
    coid = str(uuid.uuid4())
    created = (await rig.order(rig.alice, MARKETS[1], "bid", "0.4200", "10.00", client_order_id=coid)).json()
    r = await rig.call("GET", "/portfolio/orders", rig.alice, params={"ticker": MARKETS[1]})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["cursor"] == ""
    [o] = data["orders"]
    assert o["order_id"] == created["order_id"] and o["client_order_id"] == coid
    assert o["ticker"] == MARKETS[1] and o["status"] == "resting"
    assert o["yes_price_dollars"] == "0.4200" and o["no_price_dollars"] == "0.5800"
    assert o["fill_count_fp"] == "0.00" and o["remaining_count_fp"] == "10.00" and o["initial_count_fp"] == "10.00"
    assert o["book_side"] == "bid" and o["outcome_side"] == "yes" and o["type"] == "limit"
    assert datetime.fromisoformat(o["created_time"].replace("Z", "+00:00")).tzinfo is not None
    for f in ("taker_fill_cost_dollars", "maker_fill_cost_dollars", "taker_fees_dollars", "maker_fees_dollars"):
        assert _is_dollars(o[f]), (f, o[f])

    one = await rig.call("GET", f"/portfolio/orders/{created['order_id']}", rig.alice)
    assert one.status_code == 200 and one.json()["order"]["order_id"] == created["order_id"]
    # Bob cannot see Alice's order.
    assert (await rig.call("GET", f"/portfolio/orders/{created['order_id']}", rig.bob)).status_code == 404


async def test_orderbook_is_ascending_string_pairs(rig: Rig) -> None:
    t = MARKETS[2]
    for price, n in (("0.42", "10"), ("0.40", "5"), ("0.41", "2.5")):
        assert (await rig.order(rig.alice, t, "bid", price, n)).status_code == 201
    assert (await rig.order(rig.bob, t, "ask", "0.55", "3")).status_code == 201  # a NO bid at 0.45
    for key in (rig.alice, None):  # signed or not: both accepted
        r = await rig.call("GET", f"/markets/{t}/orderbook", key)
        assert r.status_code == 200, r.text
        book = r.json()["orderbook_fp"]
        assert book["yes_dollars"] == [["0.4000", "5.00"], ["0.4100", "2.50"], ["0.4200", "10.00"]]
        assert book["no_dollars"] == [["0.4500", "3.00"]]
    r = await rig.call("GET", f"/markets/{t}/orderbook", params={"depth": 1})
    assert r.json()["orderbook_fp"]["yes_dollars"] == [["0.4200", "10.00"]]
    multi = await rig.call("GET", "/markets/orderbooks", params={"tickers": f"{t},{MARKETS[0]}"})
    assert [b["ticker"] for b in multi.json()["orderbooks"]] == [t, MARKETS[0]]
    repeated = await rig.call("GET", "/markets/orderbooks", params=[("tickers", t), ("tickers", MARKETS[0])])
    assert repeated.json() == multi.json()

    market = (await rig.call("GET", f"/markets/{t}")).json()["market"]
    assert market["yes_bid_dollars"] == "0.4200" and market["yes_ask_dollars"] == "0.5500"
    assert market["yes_bid_size_fp"] == "10.00" and market["yes_ask_size_fp"] == "3.00"
    empty = (await rig.call("GET", f"/markets/{MARKETS[3]}")).json()["market"]
    assert empty["yes_bid_dollars"] == "0.0000" and empty["yes_ask_dollars"] == "1.0000"
    assert empty["price_ranges"] == [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}]
    assert empty["status"] == "active" and empty["result"] == "" and empty["strike_type"] == "greater"


async def test_duplicate_client_order_id_is_409(rig: Rig) -> None:
    coid = str(uuid.uuid4())
    assert (await rig.order(rig.alice, MARKETS[1], "bid", "0.30", "1", client_order_id=coid)).status_code == 201
    r = await rig.order(rig.alice, MARKETS[1], "bid", "0.30", "1", client_order_id=coid)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "order_already_exists"


async def test_bad_signature_is_401_with_kalshis_shape(rig: Rig) -> None:
    url = rig.exchange.rest_url + "/portfolio/balance"
    forged = rig.bob.headers("GET", url)
    forged["KALSHI-ACCESS-KEY"] = rig.alice.key_id  # Bob's signature under Alice's key id
    r = await rig.http.get(url, headers=forged)
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "authentication_error", "message": "authentication_error",
                                  "details": "rpc error: code = Unauthenticated desc = INCORRECT_API_KEY_SIGNATURE"}}
    # The query string is not part of the signed path; signing it is the classic bug.
    bad = rig.alice.headers("GET", url + "?limit=5")
    bad_query_signed = await rig.http.get(url, params={"limit": 5}, headers={
        **bad, "KALSHI-ACCESS-SIGNATURE": _sign_with_query(rig.alice, bad["KALSHI-ACCESS-TIMESTAMP"], url)})
    assert bad_query_signed.status_code == 401
    # Portfolio without any auth headers.
    assert (await rig.http.get(url)).status_code == 401
    # Timestamp in seconds.
    assert (await rig.http.get(url, headers=rig.alice.headers("GET", url, ts_ms=int(time.time())))).status_code == 401
    ok = await rig.call("GET", "/portfolio/balance", rig.alice)
    assert ok.status_code == 200


def _sign_with_query(key: RawKey, ts: str, url: str) -> str:
    path = urlsplit(url).path + "?limit=5"
    sig = key.private.sign(f"{ts}GET{path}".encode(),
                           padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                           hashes.SHA256())
    return base64.b64encode(sig).decode()


async def test_unknown_market_and_path_are_404(rig: Rig) -> None:
    r = await rig.call("GET", "/markets/KXNOPE-26OCT04-T1")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "not_found" and set(err) == {"code", "message", "details"}
    r = await rig.order(rig.alice, "KXNOPE-26OCT04-T1", "bid", "0.42", "1")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await rig.call("GET", "/no/such/endpoint")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await rig.http.get(rig.exchange.rest_url + "/markets/", params={"limit": 1})
    assert r.status_code == 301 and r.headers["location"].endswith("/trade-api/v2/markets?limit=1")


async def test_malformed_order_bodies_are_400(rig: Rig) -> None:
    for bad in ({"price": 0.42}, {"price": "0.42000001"}, {"count": 10}, {"count": "1.234"}, {"side": "yes"},
                {"time_in_force": "GTC"}, {"self_trade_prevention_type": None}):
        body = {"ticker": MARKETS[1], "side": "bid", "price": "0.42", "count": "1",
                "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross", **bad}
        body = {k: v for k, v in body.items() if v is not None}
        r = await rig.call("POST", "/portfolio/events/orders", rig.alice, body=body)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid_parameters", bad
    r = await rig.order(rig.alice, MARKETS[1], "bid", "0.425", "1")  # off the whole-cent grid
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_price"


async def test_cross_fills_positions_balance_and_cancels(rig: Rig) -> None:
    t = MARKETS[1]
    maker = (await rig.order(rig.alice, t, "bid", "0.42", "10")).json()
    taker = await rig.order(rig.bob, t, "ask", "0.40", "4", time_in_force="immediate_or_cancel")
    assert taker.status_code == 201
    tj = taker.json()
    assert tj["fill_count"] == "4.00" and tj["remaining_count"] == "0.00"
    assert tj["average_fill_price"] == "0.4200"  # at the resting order's price
    [bob_fill] = (await rig.call("GET", "/portfolio/fills", rig.bob)).json()["fills"]
    assert bob_fill["is_taker"] is True and Decimal(bob_fill["fee_cost"]) > 0
    assert Decimal(tj["average_fee_paid"]) == (Decimal(bob_fill["fee_cost"]) / 4).quantize(Decimal("0.000001"))

    fills = (await rig.call("GET", "/portfolio/fills", rig.alice)).json()
    [f] = fills["fills"]
    assert f["order_id"] == maker["order_id"] and f["count_fp"] == "4.00" and f["yes_price_dollars"] == "0.4200"
    assert f["is_taker"] is False and f["outcome_side"] == "yes" and _is_dollars(f["fee_cost"])
    assert fills["cursor"] == ""

    pos = (await rig.call("GET", "/portfolio/positions", rig.bob)).json()
    [p] = pos["market_positions"]
    assert p["ticker"] == t and p["position_fp"] == "-4.00"
    assert pos["event_positions"][0]["event_ticker"] == EVENT

    bal = (await rig.call("GET", "/portfolio/balance", rig.alice)).json()
    assert isinstance(bal["balance"], int) and _is_dollars(bal["balance_dollars"])
    assert bal["balance"] == int(Decimal(bal["balance_dollars"]) * 100)
    assert isinstance(bal["portfolio_value"], int) and isinstance(bal["updated_ts"], int)

    trades = (await rig.call("GET", "/markets/trades", params={"ticker": t})).json()["trades"]
    assert trades[0]["count_fp"] == "4.00" and trades[0]["taker_outcome_side"] == "no"
    market = (await rig.call("GET", f"/markets/{t}")).json()["market"]
    assert market["last_price_dollars"] == "0.4200" and market["volume_fp"] == "4.00"

    qp = (await rig.call("GET", f"/portfolio/orders/{maker['order_id']}/queue_position", rig.alice)).json()
    assert qp == {"queue_position_fp": "0.00"}
    qps = (await rig.call("GET", "/portfolio/orders/queue_positions", rig.alice,
                          params={"market_tickers": t})).json()["queue_positions"]
    assert qps == [{"order_id": maker["order_id"], "market_ticker": t, "queue_position_fp": "0.00"}]

    dec = await rig.call("POST", f"/portfolio/events/orders/{maker['order_id']}/decrease", rig.alice,
                         body={"reduce_by": "1"})
    assert dec.status_code == 200 and dec.json()["remaining_count"] == "5.00"
    amend = await rig.call("POST", f"/portfolio/events/orders/{maker['order_id']}/amend", rig.alice,
                           body={"ticker": t, "side": "bid", "price": "0.43", "count": "9"})
    assert amend.status_code == 200, amend.text
    assert amend.json()["remaining_count"] == "5.00" and amend.json()["fill_count"] == "4.00"
    cancel = await rig.call("DELETE", f"/portfolio/events/orders/{maker['order_id']}", rig.alice)
    assert cancel.status_code == 200 and cancel.json()["reduced_by"] == "5.00"
    again = await rig.call("DELETE", f"/portfolio/events/orders/{maker['order_id']}", rig.alice)
    assert again.status_code >= 400 and "error" in again.json()


async def test_batches_and_cancel_all(rig: Rig) -> None:
    good = {"ticker": MARKETS[0], "side": "bid", "price": "0.10", "count": "1", "time_in_force": "good_till_canceled",
            "self_trade_prevention_type": "taker_at_cross"}
    r = await rig.call("POST", "/portfolio/events/orders/batched", rig.alice,
                       body={"orders": [good, {**good, "price": "0.105"}, {**good, "price": "0.11"}]})
    assert r.status_code == 201, r.text
    items = r.json()["orders"]
    assert [i["error"] is None for i in items] == [True, False, True]
    assert items[1]["error"]["code"] == "invalid_price"
    r = await rig.call("DELETE", "/portfolio/events/orders/batched", rig.alice,
                       body={"orders": [{"order_id": items[0]["order_id"]}, {"order_id": "nope"}]})
    assert r.status_code == 200
    out = r.json()["orders"]
    assert out[0]["reduced_by"] == "1.00" and out[0]["error"] is None and out[1]["error"] is not None
    r = await rig.call("DELETE", "/portfolio/events/orders", rig.alice)
    assert r.status_code == 204 and r.content == b""
    resting = (await rig.call("GET", "/portfolio/orders", rig.alice, params={"status": "resting"})).json()
    assert resting["orders"] == []


async def test_public_catalog_endpoints(rig: Rig) -> None:
    status = (await rig.call("GET", "/exchange/status")).json()
    assert status["exchange_active"] is True and status["trading_active"] is True
    series = (await rig.call("GET", f"/series/{SERIES}")).json()["series"]
    assert series["fee_type"] == "quadratic" and series["fee_multiplier"] == 1
    assert [s["ticker"] for s in (await rig.call("GET", "/series", params={"category": "Climate and Weather"})
                                  ).json()["series"]] == [SERIES]
    events = (await rig.call("GET", "/events", params={"with_nested_markets": "true", "status": "open"})).json()
    assert events["cursor"] == "" and len(events["events"][0]["markets"]) == len(MARKETS)
    event = (await rig.call("GET", f"/events/{EVENT}")).json()
    assert event["event"]["event_ticker"] == EVENT and len(event["markets"]) == len(MARKETS)
    # Cursor pagination through the markets, two at a time.
    seen, cursor = [], None
    while True:
        page = (await rig.call("GET", "/markets", params={"limit": 2, "event_ticker": EVENT,
                                                          **({"cursor": cursor} if cursor else {})})).json()
        seen += [m["ticker"] for m in page["markets"]]
        cursor = page["cursor"]
        if cursor == "":
            break
    assert seen == MARKETS
    assert (await rig.call("GET", "/markets", params={"status": "settled"})).json()["markets"] == []
    assert (await rig.call("GET", "/markets", params={"status": "bogus"})).status_code == 400


async def test_rate_limit_answers_429_without_retry_after() -> None:
    # One request's worth of tokens, refilled at 1 token/s: the second request must be refused.
    tiny = Tier("tiny", read_per_s=1, write_per_s=1, read_capacity=10, write_capacity=10)
    exchange = SimExchange(build_world(), rate_limit=tiny)
    key = RawKey.new()
    exchange.register_key(key.key_id, key.public_pem(), "carol", balance=FUNDS)
    await exchange.start()
    try:
        async with httpx.AsyncClient() as http:
            url = exchange.rest_url + "/portfolio/balance"
            first = await http.get(url, headers=key.headers("GET", url))
            assert first.status_code == 200
            second = await http.get(url, headers=key.headers("GET", url))
            assert second.status_code == 429
            assert second.json() == {"error": "too many requests"}
            assert "retry-after" not in second.headers
            # Writes have their own bucket: a V2 cancel (2 tokens) still goes through.
            cancel_url = exchange.rest_url + "/portfolio/events/orders"
            assert (await http.delete(cancel_url, headers=key.headers("DELETE", cancel_url))).status_code == 204
    finally:
        await exchange.stop()


# -- WebSocket --------------------------------------------------------------------------------------

async def _recv(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _recv_type(ws: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    while True:
        msg = await _recv(ws, timeout)
        if msg["type"] == kind:
            return msg


async def _connect(rig: Rig, key: RawKey) -> Any:
    return await websockets.connect(rig.exchange.ws_url, additional_headers=key.headers("GET", rig.exchange.ws_url))


async def test_ws_orderbook_snapshot_then_delta_with_seq(rig: Rig) -> None:
    t = MARKETS[1]
    assert (await rig.order(rig.bob, t, "bid", "0.30", "7")).status_code == 201
    async with await _connect(rig, rig.alice) as ws:
        await ws.send(json.dumps({"id": 1, "cmd": "subscribe",
                                  "params": {"channels": ["orderbook_delta"], "market_tickers": [t]}}))
        sub = await _recv(ws)
        assert sub["type"] == "subscribed" and sub["id"] == 1 and sub["msg"]["channel"] == "orderbook_delta"
        sid = sub["msg"]["sid"]
        snap = await _recv(ws)
        assert snap["type"] == "orderbook_snapshot" and snap["sid"] == sid and snap["seq"] == 1
        assert snap["msg"]["market_ticker"] == t and isinstance(snap["msg"]["market_id"], str)
        assert snap["msg"]["yes_dollars_fp"] == [["0.3000", "7.00"]]
        assert "no_dollars_fp" not in snap["msg"]  # an empty side is omitted

        coid = str(uuid.uuid4())
        assert (await rig.order(rig.alice, t, "ask", "0.60", "2.5", client_order_id=coid)).status_code == 201
        delta = await _recv(ws)
        assert delta["type"] == "orderbook_delta" and delta["sid"] == sid and delta["seq"] == 2
        m = delta["msg"]
        assert m["market_ticker"] == t and m["side"] == "no" and m["price_dollars"] == "0.4000"
        assert m["delta_fp"] == "2.50" and isinstance(m["ts_ms"], int)
        assert m["client_order_id"] == coid and m["subaccount"] == 0  # Alice's own order

        # Someone else's order: no client_order_id.
        assert (await rig.order(rig.bob, t, "bid", "0.31", "1")).status_code == 201
        other = await _recv(ws)
        assert other["seq"] == 3 and "client_order_id" not in other["msg"]


async def test_ws_handshake_must_be_signed(rig: Rig) -> None:
    with pytest.raises(InvalidStatus) as e:
        await websockets.connect(rig.exchange.ws_url)
    assert e.value.response.status_code == 401
    wrong = rig.alice.headers("GET", rig.exchange.rest_url + "/portfolio/balance")  # signed for another path
    with pytest.raises(InvalidStatus):
        await websockets.connect(rig.exchange.ws_url, additional_headers=wrong)


async def test_ws_command_errors_and_subscription_management(rig: Rig) -> None:
    async with await _connect(rig, rig.alice) as ws:
        await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": {"channels": ["market_lifecycle"]}}))
        assert (await _recv(ws))["msg"]["code"] == 8
        await ws.send(json.dumps({"id": 2, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}}))
        assert (await _recv(ws))["msg"]["code"] == 14
        await ws.send(json.dumps({"id": 3, "cmd": "subscribe",
                                  "params": {"channels": ["orderbook_delta"], "market_ticker": "KXNOPE"}}))
        err = await _recv(ws)
        assert err == {"id": 3, "type": "error", "msg": {"code": 16, "msg": "Market not found",
                                                           "market_ticker": "KXNOPE"}}
        await ws.send(json.dumps({"id": 4, "cmd": "dance"}))
        assert (await _recv(ws))["msg"]["code"] == 5

        await ws.send(json.dumps({"id": 5, "cmd": "subscribe", "params": {
            "channels": ["orderbook_delta", "ticker"], "market_tickers": [MARKETS[0]], "use_yes_price": True}}))
        replies = [await _recv(ws) for _ in range(3)]
        kinds = sorted(r["type"] for r in replies)
        assert kinds == ["orderbook_snapshot", "subscribed", "subscribed"]
        book_sid = next(r["msg"]["sid"] for r in replies if r["type"] == "subscribed"
                        and r["msg"]["channel"] == "orderbook_delta")
        await ws.send(json.dumps({"id": 6, "cmd": "update_subscription", "params": {
            "sids": [book_sid], "market_tickers": [MARKETS[2]], "action": "add_markets"}}))
        ok = await _recv(ws)
        assert ok["type"] == "ok" and ok["sid"] == book_sid and ok["seq"] == 2
        assert ok["msg"]["market_tickers"] == sorted([MARKETS[0], MARKETS[2]])
        snap = await _recv(ws)
        assert snap["type"] == "orderbook_snapshot" and snap["seq"] == 3 and snap["msg"]["market_ticker"] == MARKETS[2]

        # use_yes_price: a NO bid at 0.45 is reported at the YES price 0.55.
        assert (await rig.order(rig.bob, MARKETS[2], "ask", "0.55", "1")).status_code == 201
        delta = await _recv_type(ws, "orderbook_delta")
        assert delta["seq"] == 4 and delta["msg"]["side"] == "no" and delta["msg"]["price_dollars"] == "0.5500"

        await ws.send(json.dumps({"id": 7, "cmd": "list_subscriptions"}))
        listed = await _recv_type(ws, "ok")
        assert sorted(s["channel"] for s in listed["msg"]) == ["orderbook_delta", "ticker"]
        await ws.send(json.dumps({"id": 8, "cmd": "unsubscribe", "params": {"sids": [book_sid]}}))
        gone = await _recv_type(ws, "unsubscribed")
        assert gone["sid"] == book_sid and gone["id"] == 8
        await ws.send(json.dumps({"id": 9, "cmd": "unsubscribe", "params": {"sids": [book_sid]}}))
        assert (await _recv_type(ws, "error"))["msg"]["code"] == 7


async def test_ws_private_channels_reach_only_their_user(rig: Rig) -> None:
    t = MARKETS[3]
    async with await _connect(rig, rig.alice) as a, await _connect(rig, rig.bob) as b:
        for ws in (a, b):
            await ws.send(json.dumps({"id": 1, "cmd": "subscribe",
                                      "params": {"channels": ["fill", "user_orders", "market_positions", "trade"]}}))
            for _ in range(4):
                assert (await _recv(ws))["type"] == "subscribed"
        maker = (await rig.order(rig.alice, t, "bid", "0.20", "3")).json()
        order_msg = await _recv_type(a, "user_order")
        assert order_msg["msg"]["order_id"] == maker["order_id"] and order_msg["msg"]["status"] == "resting"
        await rig.order(rig.bob, t, "ask", "0.20", "3")
        fill = await _recv_type(a, "fill")
        assert fill["msg"]["order_id"] == maker["order_id"] and fill["msg"]["count_fp"] == "3.00"
        assert fill["msg"]["post_position_fp"] == "3.00" and fill["msg"]["is_taker"] is False
        position = await _recv_type(a, "market_position")
        assert position["msg"]["market_ticker"] == t and position["msg"]["position_fp"] == "3.00"
        seen: dict[str, dict[str, Any]] = {}
        while not {"fill", "trade"} <= seen.keys():
            msg = await _recv(b)
            seen.setdefault(msg["type"], msg)
        assert seen["fill"]["msg"]["order_id"] != maker["order_id"] and seen["fill"]["msg"]["is_taker"] is True
        assert seen["trade"]["msg"]["market_ticker"] == t and seen["trade"]["msg"]["yes_price_dollars"] == "0.2000"
        assert seen["trade"]["msg"]["taker_outcome_side"] == "no"


async def test_ws_faults_seq_gap_error_25_and_cut(rig: Rig) -> None:
    t = MARKETS[0]
    async with await _connect(rig, rig.alice) as ws:
        await ws.send(json.dumps({"id": 1, "cmd": "subscribe",
                                  "params": {"channels": ["orderbook_delta"], "market_tickers": [t]}}))
        sid = (await _recv(ws))["msg"]["sid"]
        assert (await _recv(ws))["seq"] == 1
        rig.exchange.faults.drop_next_seq(t)
        await rig.order(rig.bob, t, "bid", "0.05", "1")
        assert (await _recv(ws))["seq"] == 3  # 2 was skipped
        await rig.order(rig.bob, t, "bid", "0.06", "1")
        assert (await _recv(ws))["seq"] == 4
        assert rig.exchange.faults.send_error_25(t) == 1
        err = await _recv(ws)
        assert err == {"type": "error", "sid": sid, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}
        await rig.order(rig.bob, t, "bid", "0.07", "1")  # the killed subscription gets nothing more
        await ws.send(json.dumps({"id": 2, "cmd": "list_subscriptions"}))
        assert (await _recv(ws)) == {"id": 2, "type": "ok", "msg": []}

        assert rig.exchange.faults.cut_connections() == 1
        with pytest.raises(ConnectionClosed):
            await _recv(ws)


async def test_ws_ping_heartbeat() -> None:
    exchange = SimExchange(build_world(), ping_interval_s=0.05)
    key = RawKey.new()
    exchange.register_key(key.key_id, key.public_pem(), "dave")
    await exchange.start()
    try:
        # aiohttp's client can surface Ping frames instead of answering them silently.
        async with aiohttp.ClientSession() as session, session.ws_connect(
                exchange.ws_url, headers=key.headers("GET", exchange.ws_url), autoping=False) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.PING and msg.data == b"heartbeat"
            await ws.pong(msg.data)
    finally:
        await exchange.stop()


async def test_ws_lifecycle_created_paused_and_settled(rig: Rig) -> None:
    world = rig.exchange.world
    async with await _connect(rig, rig.alice) as ws:
        await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": {"channels": ["market_lifecycle_v2"]}}))
        assert (await _recv(ws))["type"] == "subscribed"
        now = datetime.now(UTC)
        new = MarketInfo(ticker=f"{EVENT}-T70", event_ticker=EVENT, series_ticker=SERIES, title="NYC high",
                         yes_sub_title="71° or above", no_sub_title="70° or below", strike_type="greater",
                         floor_strike=Decimal(70), cap_strike=None, open_time=now, close_time=now + timedelta(days=1),
                         expected_expiration_time=None, latest_expiration_time=now + timedelta(days=8),
                         grid=PriceGrid.linear_cent())
        world.catalog.add_market(new)
        world.engine.add_market(new.spec(world.catalog.series[SERIES]))
        rig.exchange.tick()  # the background driver's step announces new listings
        created = await _recv_type(ws, "market_lifecycle_v2")
        assert created["msg"]["event_type"] == "created" and created["msg"]["market_ticker"] == new.ticker
        assert created["msg"]["close_ts"] == int(new.close_time.timestamp())
        world.engine.set_status(new.ticker, "active")
        world.engine.set_status(new.ticker, "inactive")
        paused = await _recv_type(ws, "market_lifecycle_v2")
        assert paused["msg"]["event_type"] == "deactivated" and paused["msg"]["is_deactivated"] is True
        world.engine.set_status(new.ticker, "active")
        assert (await _recv_type(ws, "market_lifecycle_v2"))["msg"]["event_type"] == "activated"
        assert (await rig.order(rig.alice, new.ticker, "bid", "0.70", "2")).status_code == 201
        assert (await rig.order(rig.bob, new.ticker, "ask", "0.70", "2")).status_code == 201
        world.engine.set_status(new.ticker, "closed")  # before close_time: an early close moves the close date
        early = await _recv_type(ws, "market_lifecycle_v2")
        assert early["msg"]["event_type"] == "close_date_updated" and isinstance(early["msg"]["close_ts"], int)
        world.engine.settle(new.ticker, "yes")
        determined = await _recv_type(ws, "market_lifecycle_v2")
        assert determined["msg"]["event_type"] == "determined" and determined["msg"]["result"] == "yes"
        assert determined["msg"]["settlement_value"] == "1.0000"
        settled = await _recv_type(ws, "market_lifecycle_v2")
        assert settled["msg"]["event_type"] == "settled"
    market = (await rig.call("GET", f"/markets/{new.ticker}")).json()["market"]
    assert market["status"] == "finalized" and market["result"] == "yes"
    assert market["settlement_value_dollars"] == "1.0000" and market["settlement_ts"] is not None
    settled_list = (await rig.call("GET", "/markets", params={"status": "settled"})).json()["markets"]
    assert [m["ticker"] for m in settled_list] == [new.ticker]
    [row] = (await rig.call("GET", "/portfolio/settlements", rig.alice)).json()["settlements"]
    assert row["ticker"] == new.ticker and row["event_ticker"] == EVENT and row["market_result"] == "yes"
    assert row["yes_count_fp"] == "2.00" and row["no_count_fp"] == "0.00"
    assert row["revenue"] == 200 and row["value"] == 100  # integer cents (legacy)
    assert _is_dollars(row["yes_total_cost_dollars"]) and _is_dollars(row["fee_cost"])
    # Settled positions leave /portfolio/positions.
    positions = (await rig.call("GET", "/portfolio/positions", rig.alice)).json()["market_positions"]
    assert all(p["ticker"] != new.ticker for p in positions)


async def test_trading_pause_refuses_orders_but_allows_cancels(rig: Rig) -> None:
    resting = (await rig.order(rig.alice, MARKETS[0], "bid", "0.15", "1")).json()
    rig.exchange.faults.trading_paused = True
    try:
        assert (await rig.call("GET", "/exchange/status")).json()["trading_active"] is False
        r = await rig.order(rig.alice, MARKETS[0], "bid", "0.15", "1")
        assert r.status_code == 409 and r.json()["error"]["code"] == "trading_is_paused"
        cancel = await rig.call("DELETE", f"/portfolio/events/orders/{resting['order_id']}", rig.alice)
        assert cancel.status_code == 200
    finally:
        rig.exchange.faults.trading_paused = False


async def test_latency_fault_delays_rest_answers(rig: Rig) -> None:
    rig.exchange.faults.latency_s = 0.2
    try:
        started = time.monotonic()
        assert (await rig.call("GET", "/exchange/status")).status_code == 200
        assert time.monotonic() - started >= 0.2  # a lower bound only: never a timing assertion on speed
    finally:
        rig.exchange.faults.clear()
