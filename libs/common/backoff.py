"""Back-off for loops that run until stopped: reconnects, polls, child restarts.

Call retries (one request, a few attempts, then the error goes up) use `stamina`; this is for loops
that never give up. One rule for all of them: after the n-th consecutive failure, wait a uniform
draw in [50 %, 100 %] of min(cap, base · 2ⁿ⁻¹). The floor keeps a failing peer from being hammered
by near-zero delays; the spread keeps replicas (and several venues after one network blip) from
reconnecting in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

_MAX_DOUBLINGS = 60  # 2**60 outgrows any cap; bounding the exponent keeps a years-long outage from overflowing


class Backoff:
    """Consecutive-failure back-off of one loop: `sleep(stop)` after a failure, `reset()` after a success."""

    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, *, healthy_after_s: float | None = None,
                 rng: random.Random | None = None) -> None:
        if not base_s > 0 or not cap_s > 0:
            raise ValueError(f"back-off base and cap must be positive seconds, got base {base_s!r}, cap {cap_s!r}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.healthy_after_s = healthy_after_s
        self.failures = 0  # since the last reset
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Count one more failure and return the seconds to wait before trying again."""
        self.failures += 1
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, _MAX_DOUBLINGS))
        return ceiling * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        """Start over from `base_s`: the loop is healthy again."""
        self.failures = 0

    def reset_if_healthy(self, *, lasted_s: float | None = None, delivered: bool = False) -> bool:
        """Reset after a session that delivered data or lasted `healthy_after_s`; True when it was healthy."""
        healthy = delivered or (self.healthy_after_s is not None and lasted_s is not None
                                and lasted_s >= self.healthy_after_s)
        if healthy:
            self.reset()
        return healthy

    async def sleep(self, stop: asyncio.Event) -> bool:
        """Wait the next delay, waking at once when `stop` is set; True when stopped."""
        return await sleep_unless_stopped(stop, self.next_delay())


async def sleep_unless_stopped(stop: asyncio.Event, delay_s: float) -> bool:
    """Wait `delay_s` seconds or until `stop` is set, whichever comes first; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)
    return stop.is_set()
