"""The one back-off rule of long-lived loops: growth, cap, jitter, resets, and a sleep that stop interrupts."""

from __future__ import annotations

import asyncio
import random

import pytest

from libs.common.backoff import Backoff, sleep_unless_stopped


class Edge(random.Random):
    """A random source pinned to one end of every interval, to read the ceiling or the floor exactly."""

    def __init__(self, at: float) -> None:
        super().__init__()
        self.at = at

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.at


def test_delays_double_from_base_and_stop_at_the_cap() -> None:
    b = Backoff(0.5, 4.0, rng=Edge(1.0))
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.failures == 6


def test_jitter_stays_within_half_to_all_of_the_ceiling() -> None:
    b = Backoff(1.0, 8.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(400)]
    ceilings = [min(8.0, 2.0 ** min(n, 60)) for n in range(400)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    capped = delays[10:]
    assert max(capped) - min(capped) > 2.0, "jitter must spread delays, not pin them to the cap"
    assert Backoff(1.0, 8.0, rng=Edge(0.0)).next_delay() == 0.5  # the floor is half the ceiling


def test_a_very_long_outage_does_not_overflow() -> None:
    b = Backoff(0.2, 30.0, rng=Edge(1.0))
    b.failures = 5_000
    assert b.next_delay() == 30.0


def test_reset_starts_over_from_base() -> None:
    b = Backoff(1.0, 60.0, rng=Edge(1.0))
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.failures == 0
    assert b.next_delay() == 1.0


def test_only_a_healthy_session_resets() -> None:
    b = Backoff(1.0, 60.0, healthy_after_s=30.0, rng=Edge(1.0))
    b.next_delay()
    b.next_delay()
    assert not b.reset_if_healthy(lasted_s=29.9)
    assert not b.reset_if_healthy()
    assert b.failures == 2
    assert b.reset_if_healthy(lasted_s=30.0)
    assert b.failures == 0
    b.next_delay()
    assert b.reset_if_healthy(lasted_s=0.1, delivered=True)  # data arrived: healthy however short
    assert b.failures == 0
    no_duration_rule = Backoff(1.0, 60.0)
    no_duration_rule.next_delay()
    assert not no_duration_rule.reset_if_healthy(lasted_s=3_600.0)


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 5.0)])
def test_non_positive_base_or_cap_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Backoff(base, cap)


async def test_sleep_waits_the_delay_when_not_stopped() -> None:
    b = Backoff(0.05, 0.05, rng=Edge(1.0))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await b.sleep(asyncio.Event()) is False
    assert loop.time() - t0 >= 0.04
    assert b.failures == 1


async def test_sleep_wakes_promptly_when_stop_is_set() -> None:
    b = Backoff(60.0, 60.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, stop.set)
    t0 = loop.time()
    assert await asyncio.wait_for(b.sleep(stop), 10.0) is True
    assert loop.time() - t0 < 5.0, "a 30–60 s back-off must not outlive stop"


async def test_sleep_returns_at_once_when_already_stopped() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await asyncio.wait_for(Backoff(60.0, 60.0).sleep(stop), 5.0) is True
    assert await asyncio.wait_for(sleep_unless_stopped(stop, 60.0), 5.0) is True
