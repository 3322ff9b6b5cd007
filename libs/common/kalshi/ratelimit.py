"""Client-side token buckets matching Kalshi's read and write budgets (kalshi_api.md §7.1).

Waiting here is cheaper than a 429: Kalshi sends no Retry-After, so the client paces itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    """Tokens per second and bucket capacity (seconds of budget) for reads and writes."""

    name: str
    read_per_s: float
    write_per_s: float
    read_capacity_s: float = 1.0
    write_capacity_s: float = 2.0


# Basic/Advanced read and every write bucket above Basic hold 2 s of budget, others 1 s.
TIERS: dict[str, Tier] = {
    "basic": Tier("basic", 200, 100, read_capacity_s=2.0, write_capacity_s=1.0),
    "advanced": Tier("advanced", 300, 300, read_capacity_s=2.0),
    "expert": Tier("expert", 600, 600),
    "premier": Tier("premier", 1_000, 1_000),
    "paragon": Tier("paragon", 2_000, 2_000),
    "prime": Tier("prime", 4_000, 4_000),
    "prestige": Tier("prestige", 10_000, 8_000),
}

DEFAULT_COST = 10
CANCEL_COST = 2  # V2 cancel, batch cancel per order, cancel-all


class TokenBucket:
    """An async token bucket; `take(n)` waits until n tokens are available."""

    def __init__(self, rate_per_s: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.capacity = capacity
        self._tokens = capacity
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def take(self, n: float) -> float:
        """Take `n` tokens, sleeping as needed; returns the seconds waited."""
        if n > self.capacity:
            raise ValueError(f"a request costing {n} tokens can never fit a bucket of {self.capacity}")
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= n:
                    self._tokens -= n
                    return waited
                delay = (n - self._tokens) / self.rate
                waited += delay
                await asyncio.sleep(delay)


class RateLimiter:
    """The read and write buckets of one API key."""

    def __init__(self, tier: Tier, clock: Callable[[], float] = time.monotonic) -> None:
        self.tier = tier
        self.read = TokenBucket(tier.read_per_s, tier.read_per_s * tier.read_capacity_s, clock)
        self.write = TokenBucket(tier.write_per_s, tier.write_per_s * tier.write_capacity_s, clock)

    async def acquire(self, write: bool, cost: float = DEFAULT_COST) -> float:
        """Wait for budget on the right bucket."""
        return await (self.write if write else self.read).take(cost)
