"""Fault injection for the simulated exchange: the failures a real Kalshi connection shows.

Tests reach it as `exchange.faults`: skip a WebSocket `seq` number, send the terminal error 25
(subscription buffer overflow), cut every WebSocket connection without a close frame, add latency
to every REST answer and WS message, or pause trading (orders refused with 409
`trading_is_paused`, cancels still allowed, as in Kalshi's weekly maintenance). `contract_break`
changes a field's format in every market or series the REST API serves (an API change, or a bug):
see `CONTRACT_BREAKS`.

HTTP faults that happen in front of the exchange (a load balancer, an overloaded gateway) are applied by
`Faults.middleware`, an aiohttp middleware a host installs outermost on `SimExchange.app` before it starts
(the chaos campaign's `benchmarks/chaos/simhost.py` does): `fail_next` answers 5xx without doing the work
(a gateway error), `time_out_next` does the work and then holds the answer past the client's timeout (the
order exists, the client never hears), and `storm_429` refuses every authenticated REST call with 429 for a
while (Kalshi answers 429 before processing).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from aiohttp import web

_DOLLARS = re.compile(r"^\d+\.\d+$")
# What `Faults.contract_break` can do to REST market and series objects.
CONTRACT_BREAKS = {
    "cents_prices": "market *_dollars prices as integer cents (\"42\" for $0.42)",
    "bare_counts": "market *_fp counts without decimals (\"10\" for 10.00 contracts)",
    "no_fee_type": "series without fee_type",
    "no_settlement_bounds": "markets without settlement_bounds_type",
}


def break_contract(kind: str, obj: dict[str, Any], how: str | None) -> dict[str, Any]:
    """`obj` (a REST "market" or "series" object) with the `how` fault applied; unchanged when None."""
    if how is None:
        return obj
    if how not in CONTRACT_BREAKS:
        raise ValueError(f"unknown contract break {how!r}; one of {sorted(CONTRACT_BREAKS)}")
    out = dict(obj)
    if kind == "market" and how == "cents_prices":
        for k, v in obj.items():
            if k.endswith("_dollars") and isinstance(v, str) and _DOLLARS.match(v):
                out[k] = str(int(Decimal(v) * 100))
    elif kind == "market" and how == "bare_counts":
        for k, v in obj.items():
            if k.endswith("_fp") and isinstance(v, str) and _DOLLARS.match(v):
                out[k] = str(int(Decimal(v)))
    elif kind == "market" and how == "no_settlement_bounds":
        out.pop("settlement_bounds_type", None)
        out.pop("settlement_floor_dollars", None)
    elif kind == "series" and how == "no_fee_type":
        out.pop("fee_type", None)
    return out


_REST_PREFIX = "/trade-api/v2"
_AUTHENTICATED = (_REST_PREFIX + "/portfolio", _REST_PREFIX + "/account")
_RATE_LIMITED_BODY = b'{"error": "too many requests"}'


@dataclass
class _HttpFault:
    """A pending one-shot HTTP fault: `times` requests of `method` (None = any) whose path ends with `suffix`."""

    method: str | None
    suffix: str
    times: int
    status: int = 503
    hold_s: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method.upper()) and path.endswith(self.suffix)


class _Hub(Protocol):
    def inject_error_25(self, ticker: str | None) -> int: ...

    def cut_connections(self) -> int: ...


class Faults:
    """Switches and one-shot faults; all off by default."""

    def __init__(self) -> None:
        self.latency_s: float = 0.0
        self.response_delay_s: float = 0.0  # after the work is done: the answer is late (a crash window)
        self.trading_paused: bool = False
        self.contract_break: str | None = None  # one of CONTRACT_BREAKS
        self._drops: list[str | None] = []
        self._lost: list[tuple[str, str, int]] = []
        self._errors: list[_HttpFault] = []
        self._timeouts: list[_HttpFault] = []
        self._storm_until: float = 0.0  # time.monotonic() until which every authenticated REST call gets 429
        self._hub: _Hub | None = None

    def attach(self, hub: _Hub) -> None:
        """Connect to the WebSocket hub the WS faults act on (done by SimExchange)."""
        self._hub = hub

    def drop_next_seq(self, ticker: str | None = None) -> None:
        """Skip one `seq` number on the next orderbook message for `ticker` (None = any market)."""
        self._drops.append(ticker)

    def take_drop(self, ticker: str) -> bool:
        """Consume a pending seq skip that applies to `ticker` (called by the hub)."""
        for i, t in enumerate(self._drops):
            if t is None or t == ticker:
                del self._drops[i]
                return True
        return False

    def send_error_25(self, ticker: str | None = None) -> int:
        """Kill every orderbook subscription covering `ticker` (None = all) with error 25; return how many."""
        return self._hub.inject_error_25(ticker) if self._hub is not None else 0

    def cut_connections(self) -> int:
        """Drop every WebSocket connection abruptly (no close frame); return how many."""
        return self._hub.cut_connections() if self._hub is not None else 0

    def lose_next_response(self, method: str = "POST", path_suffix: str = "/portfolio/events/orders",
                           status: int = 503) -> None:
        """Process the next matching request but answer `status` instead of its result (a lost response)."""
        self._lost.append((method.upper(), path_suffix, status))

    def take_lost_response(self, method: str, path: str) -> int | None:
        """Consume a pending lost-response fault that matches this request (called by the server)."""
        for i, (m, suffix, status) in enumerate(self._lost):
            if m == method.upper() and path.endswith(suffix):
                del self._lost[i]
                return status
        return None

    # -- faults in front of the exchange (applied by `middleware`) --------------------------------

    def fail_next(self, times: int = 1, *, status: int = 503, method: str | None = None,
                  path_suffix: str = "") -> None:
        """The next `times` matching REST requests get `status` (5xx) and are never processed (a gateway error)."""
        if not 500 <= status <= 599:
            raise ValueError(f"status {status} is not a 5xx status")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._errors.append(_HttpFault(method.upper() if method else None, path_suffix, times, status=status))

    def time_out_next(self, hold_s: float, times: int = 1, *, method: str | None = "POST",
                      path_suffix: str = "/portfolio/events/orders") -> None:
        """The next `times` matching requests are processed, then their answer is held `hold_s` seconds (past the
        client's timeout: it gives up while the order exists)."""
        if hold_s <= 0 or times < 1:
            raise ValueError("hold_s must be positive and times at least 1")
        self._timeouts.append(_HttpFault(method.upper() if method else None, path_suffix, times, hold_s=hold_s))

    def storm_429(self, seconds: float) -> None:
        """Every authenticated REST call is refused with 429 (before processing) for the next `seconds`."""
        self._storm_until = max(self._storm_until, time.monotonic() + seconds)

    @property
    def in_429_storm(self) -> bool:
        """True while a `storm_429` lasts."""
        return time.monotonic() < self._storm_until

    @staticmethod
    def _take(pending: list[_HttpFault], method: str, path: str) -> _HttpFault | None:
        for f in pending:
            if f.matches(method, path):
                f.times -= 1
                if f.times <= 0:
                    pending.remove(f)
                return f
        return None

    def take_http_error(self, method: str, path: str) -> int | None:
        """Consume a pending `fail_next` fault matching this request; its status."""
        f = self._take(self._errors, method, path)
        return f.status if f is not None else None

    def take_timeout(self, method: str, path: str) -> float | None:
        """Consume a pending `time_out_next` fault matching this request; how long to hold the answer."""
        f = self._take(self._timeouts, method, path)
        return f.hold_s if f is not None else None

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """The faults in front of the exchange: 429 storms, 5xx without processing, answers held past timeouts.

        Install outermost: `exchange.app.middlewares.insert(0, exchange.faults.middleware)` before `start()`.
        Only REST is affected (a WebSocket upgrade passes).
        """
        path = request.path
        if not path.startswith(_REST_PREFIX) or request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        if self.in_429_storm and path.startswith(_AUTHENTICATED):
            return web.Response(body=_RATE_LIMITED_BODY, status=429, content_type="application/json")
        status = self.take_http_error(request.method, path)
        if status is not None:
            return web.Response(body=b"<html><body>" + str(status).encode() + b" Bad Gateway</body></html>",
                                status=status, content_type="text/html")
        hold = self.take_timeout(request.method, path)
        response = await handler(request)
        if hold is not None:
            await asyncio.sleep(hold)
        return response

    def pending(self) -> dict[str, int]:
        """One-shot faults armed but not yet consumed by a request or message, by kind."""
        return {"seq_gap": len(self._drops), "lost_response": len(self._lost),
                "http_5xx": sum(f.times for f in self._errors), "timeout": sum(f.times for f in self._timeouts)}

    def clear(self) -> None:
        """Turn every fault off."""
        self.latency_s = 0.0
        self.response_delay_s = 0.0
        self.trading_paused = False
        self.contract_break = None
        self._drops.clear()
        self._lost.clear()
        self._errors.clear()
        self._timeouts.clear()
        self._storm_until = 0.0
