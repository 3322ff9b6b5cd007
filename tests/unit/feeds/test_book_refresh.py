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


async def test_quiet_books_are_refreshed_spread_out_oldest_first_not_in_one_burst() -> None:
    async def emit(subject: str, ev: Event) -> None:
        return None

    fan = BookFanout(emit, mode=Mode.SIM, refresh_s=10.0, tick_s=0.1)
    books = [LocalBook(f"KXBTCD-26NOV2317-T{90_000 + 250 * i}") for i in range(2_000)]
    for b in books:
        b.load_snapshot([(3000, 500)], [(6600, 400)], seq=1)
        fan.on_book(b)
    assert await fan.flush() == 2_000
    t0 = max(fan._published_at.values())
    for i, b in enumerate(books):  # published over the last second, the first of them longest ago
        fan._published_at[b.ticker] = t0 - 1.0 + i / 2_000
    marked = fan.refresh_due(now=t0 + 10.0)  # ~all due at once: a tick takes twice its share, no more
    assert marked == 40
    assert set(fan._dirty) == {b.ticker for b in books[:40]}  # the oldest
    assert await fan.flush() == 40

    def published_at(now: float) -> None:  # flush stamps the real clock; this test runs on its own
        for t in fan._dirty:
            fan._published_at[t] = now
        fan._dirty.clear()

    for t in list(fan._published_at)[:40]:
        fan._published_at[t] = t0 + 10.0
    total, last = 40, 0.0
    for k in range(1, 100):  # the rest follow at the tick rate, none kept waiting much past refresh_s
        now = t0 + 10.0 + 0.1 * k
        got = fan.refresh_due(now=now)
        assert got <= 40
        total += got
        last = now if got else last
        published_at(now)
    assert total == 2_000 and last - t0 < 16.0  # the last quiet book waited ~5 s past its due time, not more
    assert fan.refresh_due(now=t0 + 19.95) == 0  # each once: the next round is due from t0 + 20
