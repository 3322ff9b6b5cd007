"""Fault injection for the simulated exchange: the failures a real Kalshi connection shows.

Tests reach it as `exchange.faults`: skip a WebSocket `seq` number, send the terminal error 25
(subscription buffer overflow), cut every WebSocket connection without a close frame, add latency
to every REST answer and WS message, or pause trading (orders refused with 409
`trading_is_paused`, cancels still allowed, as in Kalshi's weekly maintenance). `contract_break`
changes a field's format in every market or series the REST API serves (an API change, or a bug):
see `CONTRACT_BREAKS`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Protocol

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

    def clear(self) -> None:
        """Turn every fault off."""
        self.latency_s = 0.0
        self.trading_paused = False
        self.contract_break = None
        self._drops.clear()
        self._lost.clear()
