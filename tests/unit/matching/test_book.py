"""LevelBook: FIFO levels, an incrementally tracked best price, queue-ahead and depth views."""

from __future__ import annotations

import pytest

from libs.common.matching.book import Entry, LevelBook


def test_levels_are_fifo_and_the_best_is_tracked_as_levels_come_and_go() -> None:
    book = LevelBook()
    first, better, second = Entry("first", 4_000, 300), Entry("better", 4_100, 100), Entry("second", 4_000, 200)
    for e in (first, better, second):
        book.add(e)
    assert book.best() == 4_100 and len(book) == 2
    assert book.levels() == [(4_000, 500), (4_100, 100)]  # ascending, best last
    assert book.first(4_000) is first
    assert [e.ref for e in book.entries_from_best(4_000)] == ["better", "first", "second"]
    assert [e.ref for e in book.entries_from_best(4_050)] == ["better"]
    book.remove(better)
    assert book.best() == 4_000 and book.levels() == [(4_000, 500)]
    book.reduce(first, 300)  # fully reduced: leaves the queue
    assert book.first(4_000) is second and first.remaining == 0
    book.remove(second)
    assert book.best() is None and book.levels() == [] and len(book) == 0


def test_reduce_keeps_the_queue_position_and_ahead_of_counts_what_is_in_front() -> None:
    book = LevelBook()
    a, b, c = Entry("a", 5_000, 500), Entry("b", 5_000, 300), Entry("c", 5_000, 100)
    for e in (a, b, c):
        book.add(e)
    assert [book.ahead_of(e) for e in (a, b, c)] == [0, 500, 800]
    book.reduce(a, 200)
    assert book.first(5_000) is a and book.ahead_of(c) == 600 and book.size_at(5_000) == 700
    with pytest.raises(ValueError):
        book.reduce(b, 301)
    book.remove(b)  # from the middle
    assert book.ahead_of(c) == 300
    with pytest.raises(KeyError):
        book.ahead_of(b)


def test_depth_and_size_from() -> None:
    book = LevelBook()
    for price, size in ((3_000, 100), (3_500, 200), (4_000, 300), (4_500, 400)):
        book.add(Entry(None, price, size))
    assert book.levels(2) == [(4_000, 300), (4_500, 400)]
    assert book.levels(10) == book.levels() and book.levels(0) == []
    assert book.size_from(3_500) == 900 and book.size_from(4_501) == 0 and book.size_from(0) == 1_000
    with pytest.raises(ValueError):
        book.add(Entry(None, 3_000, 0))
