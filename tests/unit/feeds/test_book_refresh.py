"""BookFanout republishes quiet books, so downstream freshness means 'the feed is alive'."""

from __future__ import annotations

from libs.common.config import Mode
from libs.common.events import Event
from libs.common.kalshi import LocalBook
from services.feeds.books import BookFanout


async def test_quiet_valid_books_are_published_again_after_refresh_s() -> None:
    sent: list[tuple[str, Event]] = []

    async def emit(subject: str, ev: Event) -> None:
        sent.append((subject, ev))

    fan = BookFanout(emit, mode=Mode.SIM, refresh_s=10.0)
    quiet, broken = LocalBook("KXHIGHNY-26NOV23-B52.5"), LocalBook("KXHIGHNY-26NOV23-B54.5")
    quiet.load_snapshot([(3000, 500)], [(6600, 400)], seq=1)
    broken.load_snapshot([(3000, 500)], [], seq=1)
    fan.on_book(quiet)
    fan.on_book(broken)
    assert await fan.flush() == 2
    broken.invalidate()  # a gap: never republish a book we no longer trust
    published = max(fan._published_at.values())
    assert fan.refresh_due(now=published + 5) == 0
    assert fan.refresh_due(now=published + 10) == 1
    assert await fan.flush() == 1
    assert sent[-1][1].ticker == quiet.ticker  # type: ignore[attr-defined]
