"""The WebSocket connections of feeds as plain data: `cmd.feeds.ws_status` answers with it.

Each connection reports its name, URL, state (`connecting` before the first session, `connected`,
`reconnecting` after a drop), how often it reconnected and how old its last message is. The crypto
venues keep their own counters (`VenueFeed.status`); the Kalshi WebSocket client is watched from here
through its public callbacks (`KalshiLink`): a book snapshot or delta, a trade or a lifecycle message
counts as a message, its own pings and acknowledgements do not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from libs.common.bus import Bus
from libs.common.events import utcnow
from libs.common.kalshi import KalshiWS
from services.feeds.books import RestBookPoller


class Connection(Protocol):
    """Anything that can describe its connection (`VenueFeed`, `KalshiLink`, `RestLink`)."""

    def status(self, now: datetime) -> dict[str, Any]: ...


def _age(now: datetime, t: datetime | None) -> float | None:
    return None if t is None else round(max((now - t).total_seconds(), 0.0), 3)


class KalshiLink:
    """The Kalshi WebSocket as seen by feeds; call `seen()` from the client's callbacks."""

    def __init__(self, ws: KalshiWS, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.ws = ws
        self.clock = clock
        self.messages = 0
        self.last_at: datetime | None = None

    def seen(self) -> None:
        """A message arrived on the connection."""
        self.messages += 1
        self.last_at = self.clock()

    def status(self, now: datetime) -> dict[str, Any]:
        """The connection as plain data."""
        ws = self.ws
        state = "connected" if ws.connected.is_set() else "reconnecting" if ws.connects else "connecting"
        return {"name": "kalshi", "kind": "kalshi", "url": ws.env.ws_url, "state": state, "connects": ws.connects,
                "reconnects": max(ws.connects - 1, 0), "failures_in_a_row": ws.backoff.failures,
                "messages": self.messages, "books": sum(b.valid for b in ws.books.values()),
                "resyncs": ws.resyncs, "gaps": ws.gaps, "malformed": ws.malformed,
                "last_message_age_s": _age(now, self.last_at)}


class RestLink:
    """Kalshi books by REST polling (no API keys): not a WebSocket, listed so the operator sees why."""

    def __init__(self, url: str, poller: RestBookPoller) -> None:
        self.url = url
        self.poller = poller

    def status(self, now: datetime) -> dict[str, Any]:
        """The poller as plain data (state `polling`; the last message is the last poll that answered)."""
        p = self.poller
        return {"name": "kalshi", "kind": "rest", "url": self.url, "state": "polling", "connects": 0,
                "reconnects": 0, "failures_in_a_row": p.backoff.failures, "messages": 0, "books": len(p.books),
                "last_message_age_s": _age(now, p.last_ok_at)}


def ws_status(links: Sequence[Connection], *, instance: str, now: datetime) -> dict[str, Any]:
    """The `ws_status` answer: every connection of this feeds instance, as of `now`."""
    return {"instance": instance, "as_of": now, "connections": [link.status(now) for link in links]}


async def serve_ws_status(bus: Bus, links: Sequence[Connection], *, instance: str,
                          clock: Callable[[], datetime] = utcnow) -> None:
    """Answer `cmd.feeds.ws_status` (one feeds replica answers, about its own connections)."""
    async def answer(_: dict[str, Any]) -> dict[str, Any]:
        return ws_status(links, instance=instance, now=clock())

    await bus.serve("feeds", "ws_status", answer)


__all__ = ["Connection", "KalshiLink", "RestLink", "serve_ws_status", "ws_status"]
