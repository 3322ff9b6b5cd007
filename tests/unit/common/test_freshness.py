"""Ages from the source's own timestamp: skew allowance, future stamps, and the market view's book age."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import partial

from libs.common.freshness import FreshnessLimits
from libs.common.market_view import MarketView
from tests.kit.factories import book_update, market_definition

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def test_age_is_from_the_source_timestamp_with_a_bounded_skew_allowance() -> None:
    f = FreshnessLimits(book_s=30, skew_s=5)
    assert f.age_s(NOW - timedelta(seconds=12), NOW) == 12
    assert f.age_s(NOW + timedelta(seconds=3), NOW) == 0  # a little ahead: clock skew
    assert f.age_s(NOW + timedelta(seconds=60), NOW) == math.inf  # far ahead: not trusted
    assert f.fresh("book", NOW - timedelta(seconds=30), NOW)
    assert not f.fresh("book", NOW - timedelta(seconds=31), NOW)
    assert not f.fresh("book", None, NOW)
    assert not f.fresh("book", NOW + timedelta(minutes=1), NOW)


def test_a_book_that_arrives_now_is_as_old_as_its_timestamp_and_an_older_one_never_replaces_a_newer() -> None:
    now = [NOW]
    view = MarketView(FreshnessLimits(book_s=30), lambda: now[0])
    st = view.on_market(market_definition("A-1", ts_event=NOW, event_ticker="A", series_ticker="KXHIGHNY"))
    book = partial(book_update, "A-1", ((4_000, 100),), ((5_000, 100),), series_ticker="KXHIGHNY")

    view.on_book(book(ts_event=NOW - timedelta(minutes=10), seq=900))  # a replay left by an earlier session
    assert view.book_age_s(st) == 600 and not view.book_fresh(st)
    assert view.freshest_book_age_s() == 600
    view.on_book(book(ts_event=NOW, seq=1))  # feeds restarted: seq 1, but newer
    assert view.book_fresh(st) and st.book is not None and st.book.seq == 1
    view.on_book(book(ts_event=NOW - timedelta(seconds=5), seq=950))  # late delivery of an older book
    assert st.book.seq == 1
    now[0] = NOW + timedelta(seconds=31)
    assert not view.book_fresh(st)
