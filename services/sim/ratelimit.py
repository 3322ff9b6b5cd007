"""Kalshi's token-bucket rate limits for the simulated exchange (kalshi_api.md §7.1).

Every authenticated request costs tokens from one of two buckets per user: Write (order create,
amend, decrease, cancel) or Read (everything else). The default cost is 10; a V2 cancel and
cancel-all cost 2; a batch create costs 10 per order and a batch cancel 2 per order, and a batch
must fit in the bucket at once or is refused whole. An empty bucket answers 429 with the body
`{"error": "too many requests"}` and no Retry-After header.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Bucket = Literal["read", "write"]

DEFAULT_COST = 10
CANCEL_COST = 2
BATCH_CREATE_COST_PER_ORDER = 10
BATCH_CANCEL_COST_PER_ORDER = 2

_V2_ORDERS = "/trade-api/v2/portfolio/events/orders"
TOO_MANY_REQUESTS_BODY = {"error": "too many requests"}  # a string, not the usual error object


@dataclass(frozen=True)
class Tier:
    """Refill rates (tokens/s) and bucket capacities of one usage tier."""

    name: str
    read_per_s: float
    write_per_s: float
    read_capacity: float | None = None  # None = one second of refill
    write_capacity: float | None = None

    def capacity(self, bucket: Bucket) -> float:
        """How many tokens the bucket holds when full."""
        if bucket == "read":
            return self.read_capacity if self.read_capacity is not None else self.read_per_s
        return self.write_capacity if self.write_capacity is not None else self.write_per_s

    def rate(self, bucket: Bucket) -> float:
        """Refill rate in tokens per second."""
        return self.read_per_s if bucket == "read" else self.write_per_s


# Basic/Advanced read buckets and every write bucket above Basic hold 2 s of budget; the rest 1 s.
BASIC = Tier("basic", 200, 100, read_capacity=400, write_capacity=100)
ADVANCED = Tier("advanced", 300, 300, read_capacity=600, write_capacity=600)
EXPERT = Tier("expert", 600, 600, read_capacity=600, write_capacity=1200)
PREMIER = Tier("premier", 1000, 1000, read_capacity=1000, write_capacity=2000)
PARAGON = Tier("paragon", 2000, 2000, read_capacity=2000, write_capacity=4000)
PRIME = Tier("prime", 4000, 4000, read_capacity=4000, write_capacity=8000)
PRESTIGE = Tier("prestige", 10_000, 8000, read_capacity=10_000, write_capacity=16_000)
TIERS = {t.name: t for t in (BASIC, ADVANCED, EXPERT, PREMIER, PARAGON, PRIME, PRESTIGE)}


@dataclass
class TokenBucket:
    """A bucket that refills continuously up to its capacity."""

    rate: float
    capacity: float
    tokens: float
    stamp: float

    def take(self, cost: float, now: float) -> bool:
        """Take `cost` tokens if they are all there (all or nothing)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if cost > self.tokens:
            return False
        self.tokens -= cost
        return True


def classify(method: str, path: str, items: int = 0) -> tuple[Bucket, int]:
    """Return the bucket and token cost of a request; `items` = orders in a batch body."""
    method = method.upper()
    if path.startswith(_V2_ORDERS) and method in ("POST", "DELETE"):
        if path == _V2_ORDERS + "/batched":
            per = BATCH_CREATE_COST_PER_ORDER if method == "POST" else BATCH_CANCEL_COST_PER_ORDER
            return "write", per * max(items, 1)
        if method == "DELETE":
            return "write", CANCEL_COST  # single V2 cancel and cancel-all
        return "write", DEFAULT_COST  # create, amend, decrease
    if method in ("POST", "PUT", "DELETE") and path.startswith("/trade-api/v2/portfolio/"):
        return "write", DEFAULT_COST
    return "read", DEFAULT_COST


@dataclass
class RateLimiter:
    """Per-user read and write buckets for one tier."""

    tier: Tier
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, Bucket], TokenBucket] = field(default_factory=dict)

    def charge(self, user_id: str, bucket: Bucket, cost: int) -> bool:
        """Take `cost` tokens from the user's bucket; False means answer 429."""
        now = self.clock()
        b = self._buckets.get((user_id, bucket))
        if b is None:
            cap = self.tier.capacity(bucket)
            b = self._buckets[(user_id, bucket)] = TokenBucket(self.tier.rate(bucket), cap, cap, now)
        return b.take(cost, now)

    def reset(self) -> None:
        """Refill every bucket."""
        self._buckets.clear()
