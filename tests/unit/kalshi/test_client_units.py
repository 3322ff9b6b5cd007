"""Kalshi client pieces that need no server: signing, models, local book, token bucket."""

from __future__ import annotations

import asyncio
import base64
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from libs.common.kalshi.book import BookInconsistent, LocalBook
from libs.common.kalshi.errors import ConfigurationError
from libs.common.kalshi.models import Balance, Market, Order, Orderbook
from libs.common.kalshi.ratelimit import TokenBucket
from libs.common.kalshi.signing import SIG_HEADER, TS_HEADER, Signer, load_private_key
from tests.kit.keys import private_pem, rsa_key


def test_signature_is_pss_sha256_over_ts_method_and_path_without_query() -> None:
    key = rsa_key()
    signer = Signer("key-1", key, clock_ms=lambda: 1703123456789)
    headers = signer.sign("get", "https://x.test/trade-api/v2/portfolio/orders?limit=5")
    assert headers[TS_HEADER] == "1703123456789"
    sig = base64.b64decode(headers[SIG_HEADER])
    expected = b"1703123456789GET/trade-api/v2/portfolio/orders"
    key.public_key().verify(sig, expected, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                            hashes.SHA256())
    with pytest.raises(Exception):  # noqa: B017 - cryptography raises InvalidSignature
        key.public_key().verify(sig, expected + b"?limit=5", padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                                         salt_length=32), hashes.SHA256())
    assert "key-1" not in repr(signer)


def test_headers_signed_ahead_are_handed_out_once_and_only_while_young() -> None:
    key, now = rsa_key(), [1_703_123_456_000]
    signer = Signer("key-1", key, clock_ms=lambda: now[0], ahead_max_age_ms=1_000)
    url = "https://x.test/trade-api/v2/portfolio/events/orders"
    signer.prepare("post", url)
    now[0] += 600
    assert signer.ahead_age_ms("POST", url) == 600
    first = signer.sign("POST", url + "?ignored=1")  # the query is not signed: the same key
    assert first[TS_HEADER] == "1703123456000" and signer.signed_ahead_used == 1
    signed = b"1703123456000POST/trade-api/v2/portfolio/events/orders"
    key.public_key().verify(base64.b64decode(first[SIG_HEADER]), signed,
                            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    second = signer.sign("POST", url)  # never the same headers twice
    assert second[TS_HEADER] == "1703123456600" and signer.ahead_age_ms("POST", url) is None
    signer.prepare("POST", url)
    assert signer.sign("GET", url)[TS_HEADER] == "1703123456600"  # another method: not these
    assert signer.signed_ahead_used == 1
    now[0] += 1_001
    assert signer.sign("POST", url)[TS_HEADER] == "1703123457601"  # too old: signed now, the old ones dropped
    assert signer.signed_ahead_used == 1 and signer.ahead_age_ms("POST", url) is None
    signer.prepare("POST", url)
    now[0] -= 5_000  # the clock stepped back: a timestamp from the future is not used either
    assert signer.sign("POST", url)[TS_HEADER] == "1703123452601"


def test_private_key_loading_errors_are_clear(tmp_path: Path) -> None:
    good = tmp_path / "k.pem"
    good.write_bytes(private_pem(rsa_key()))
    assert load_private_key(good).key_size == 2048
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigurationError, match="not an unencrypted PEM"):
        load_private_key(bad)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")


MARKET = {
    "ticker": "KXBTCD-26AUG2517-T78499.99", "event_ticker": "KXBTCD-26AUG2517", "status": "active",
    "open_time": "2026-08-25T20:00:00Z", "close_time": "2026-08-25T21:00:00Z",
    "yes_bid_dollars": "0.4200", "yes_ask_dollars": "0.4400", "no_bid_dollars": "0.5600", "no_ask_dollars": "0.5800",
    "last_price_dollars": "0.4300", "volume_fp": "1234.50", "open_interest_fp": "10.00", "result": "",
    "strike_type": "greater", "floor_strike": 78499.99, "price_level_structure": "linear_cent",
    "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}], "brand_new_field": {"x": 1},
}


def test_market_model_converts_money_and_keeps_unknown_fields() -> None:
    m = Market.model_validate(MARKET)
    assert (m.yes_bid, m.yes_ask, m.last_price, m.volume) == (4_200, 4_400, 4_300, 123_450)
    assert str(m.floor_strike) == "78499.99"
    assert m.grid.is_valid(4_200) and not m.grid.is_valid(4_250)
    assert m.model_extra == {"brand_new_field": {"x": 1}}


def test_missing_or_malformed_required_fields_raise() -> None:
    broken = {k: v for k, v in MARKET.items() if k != "yes_bid_dollars"}
    with pytest.raises(Exception, match="yes_bid_dollars"):
        Market.model_validate(broken)
    with pytest.raises(Exception, match="dollar"):
        Market.model_validate({**MARKET, "yes_ask_dollars": "44c"})


def test_orderbook_balance_and_order_models() -> None:
    ob = Orderbook.model_validate({"yes_dollars": [["0.0100", "200.00"], ["0.4200", "13.00"]], "no_dollars": []})
    assert ob.yes == [(100, 20_000), (4_200, 1_300)] and ob.no == []
    assert Orderbook.model_validate({"yes_dollars": None}).yes == []
    bal = Balance.model_validate({"balance": 12345, "balance_dollars": "123.456789", "portfolio_value": 0})
    assert bal.balance == 1_234_567  # exact dollars win over truncated cents, rounded down to $0.0001
    assert Balance.model_validate({"balance": 12345}).balance == 1_234_500
    o = Order.model_validate({"order_id": "o1", "ticker": "T", "outcome_side": "no", "book_side": "ask",
                              "status": "resting", "yes_price_dollars": "0.3000", "fill_count_fp": "0.00",
                              "remaining_count_fp": "2.50"})
    assert o.remaining_count == 250 and o.yes_price == 3_000


def test_local_book_tracks_best_levels_incrementally() -> None:
    b = LocalBook("T")
    assert b.best_yes_bid is None and not b.valid
    b.load_snapshot([(800, 30_000), (2_200, 33_300)], [(5_400, 2_000), (5_600, 14_600)], seq=1)
    assert b.best_yes_bid == (2_200, 33_300) and b.best_yes_ask == (4_400, 14_600)
    b.apply_delta("yes", 2_300, 500, seq=2)
    assert b.best_yes_bid == (2_300, 500)
    b.apply_delta("yes", 2_300, -500, seq=3)
    assert b.best_yes_bid == (2_200, 33_300)
    b.apply_delta("no", 5_600, -14_600)
    assert b.best_no_bid == (5_400, 2_000)
    with pytest.raises(BookInconsistent):
        b.apply_delta("no", 100, -1)
    assert not b.crossed()


def test_local_book_matches_a_naive_model_under_random_deltas() -> None:
    rng = random.Random(3)
    b = LocalBook("T")
    b.load_snapshot([], [])
    naive: dict[str, dict[int, int]] = {"yes": {}, "no": {}}
    for _ in range(5_000):
        side = rng.choice(["yes", "no"])
        price = rng.randrange(1, 100) * 100
        cur = naive[side].get(price, 0)
        delta = rng.randint(-cur, 500) if cur else rng.randint(1, 500)
        naive[side][price] = cur + delta
        b.apply_delta(side, price, delta)  # type: ignore[arg-type]
        for s, levels in (("yes", b.yes_levels()), ("no", b.no_levels())):
            want = sorted((p, c) for p, c in naive[s].items() if c > 0)
            assert levels == want


async def test_token_bucket_paces_requests() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=100, capacity=20, clock=lambda: now[0])
    assert await bucket.take(10) == 0
    assert await bucket.take(10) == 0
    waited = asyncio.create_task(bucket.take(10))
    await asyncio.sleep(0)
    now[0] += 0.1  # the sleep inside take() is real; advancing the fake clock lets it refill
    assert await waited == pytest.approx(0.1)
    with pytest.raises(ValueError):
        await bucket.take(21)


async def test_ws_malformed_frames_are_counted_and_skipped() -> None:
    from libs.common.kalshi.rest import sim_environment
    from libs.common.kalshi.ws import KalshiWS

    seen: list[str] = []
    ws = KalshiWS(sim_environment("http://127.0.0.1:1/trade-api/v2", "ws://127.0.0.1:1"), None,
                  on_book=lambda b: seen.append(b.ticker))
    await ws.subscribe_books(["T"])
    ws._on_subscribed({"id": 1, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}})
    await ws._dispatch('{"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": {"market_ticker": "T"}}')
    for bad in ("not json", '{"no_type": 1}', '{"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": {}}',
                '{"type": "orderbook_delta", "sid": 1, "seq": 3, "msg": {"market_ticker": "T", '
                '"price_dollars": "4 cents", "delta_fp": "1.00", "side": "yes"}}'):
        await ws._dispatch(bad)
    assert ws.malformed == 3  # the last one is not even parsed: its book already awaits a snapshot
    assert not ws.books["T"].valid and ws.gaps >= 1, "an unreadable delta is a lost update: resync"
    await ws._dispatch('{"type": "orderbook_delta", "sid": 1, "seq": 4, "msg": {"market_ticker": "T", '
                       '"price_dollars": "0.0400", "delta_fp": "1.00", "side": "yes"}}')
    assert seen == ["T"]  # nothing published from an invalid book
    await ws._dispatch('{"type": "orderbook_snapshot", "sid": 1, "seq": 5, "msg": {"market_ticker": "T", '
                       '"yes_dollars_fp": [["0.0400", "1.00"]]}}')
    assert ws.books["T"].valid and ws.books["T"].best_yes_bid == (400, 100) and seen == ["T", "T"]
