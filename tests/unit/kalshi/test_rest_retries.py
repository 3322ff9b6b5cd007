"""Which REST failures the client retries, and how often, behind an httpx MockTransport."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from libs.common.kalshi import errors as E
from libs.common.kalshi.rest import KalshiRest, sim_environment
from libs.common.kalshi.signing import Signer
from tests.kit.keys import rsa_key

ENV = sim_environment("http://kalshi.test/trade-api/v2", "ws://kalshi.test")
STATUS = {"exchange_active": True, "trading_active": True}
CREATED = {"order_id": "o-1", "fill_count": "0.00", "remaining_count": "1.00"}
Reply = httpx.Response | type[httpx.TransportError]


def client(replies: list[Reply], seen: list[httpx.Request], attempts: int = 3) -> KalshiRest:
    """A client whose requests get `replies` in order (an exception class is raised as a network error)."""
    queue: Iterator[Reply] = iter(replies)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = next(queue)
        if isinstance(reply, type):
            raise reply("connection reset", request=request)
        return reply

    return KalshiRest(ENV, Signer("key-1", rsa_key()), tier="prestige", transport=httpx.MockTransport(handle),
                      max_attempts=attempts, backoff_base_s=0.001, backoff_cap_s=0.002)


def status(code: int, body: object = None) -> httpx.Response:
    return httpx.Response(code, json=body if body is not None else {"error": {"code": "x", "message": "x"}})


async def test_server_errors_on_a_read_are_retried_up_to_max_attempts() -> None:
    seen: list[httpx.Request] = []
    rest = client([status(503)] * 5, seen, attempts=3)
    with pytest.raises(E.ServerError):
        await rest.exchange_status()
    assert len(seen) == 3


async def test_a_read_recovers_after_a_429_and_a_network_error() -> None:
    seen: list[httpx.Request] = []
    rest = client([status(429, {"error": "too many requests"}), httpx.ConnectError, status(200, STATUS)], seen)
    assert (await rest.exchange_status()).trading_active
    assert len(seen) == 3


async def test_client_errors_are_not_retried() -> None:
    seen: list[httpx.Request] = []
    rest = client([status(400), status(200, STATUS)], seen)
    with pytest.raises(E.KalshiError):
        await rest.exchange_status()
    assert len(seen) == 1


@pytest.mark.parametrize("failure", [status(503), httpx.ReadError], ids=["5xx", "network"])
async def test_a_create_without_client_order_id_is_sent_once(failure: Reply) -> None:
    seen: list[httpx.Request] = []
    rest = client([failure, status(201, CREATED)], seen)
    with pytest.raises((E.ServerError, E.TransportError)):
        await rest.create_order("T", "bid", 2_000, 1)
    assert len(seen) == 1, "the order may be on the book: repeating it could double it"


@pytest.mark.parametrize("failure", [status(503), httpx.ReadError], ids=["5xx", "network"])
async def test_a_create_with_client_order_id_is_retried(failure: Reply) -> None:
    seen: list[httpx.Request] = []
    rest = client([failure, status(201, CREATED)], seen)
    res = await rest.create_order("T", "bid", 2_000, 1, client_order_id="kd-1")
    assert res.order_id == "o-1" and len(seen) == 2


async def test_a_429_on_a_create_without_client_order_id_is_retried() -> None:
    seen: list[httpx.Request] = []
    rest = client([status(429, {"error": "too many requests"}), status(201, CREATED)], seen)
    assert (await rest.create_order("T", "bid", 2_000, 1)).order_id == "o-1"  # Kalshi rejects 429s unprocessed
    assert len(seen) == 2
