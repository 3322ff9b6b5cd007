"""How old an input is, measured from its source's own timestamp — never from when we received it.

A message replayed from JetStream, or buffered through a NATS reconnect, arrives "just now" but may
describe the world ten minutes ago. Every age here is `now − ts_event` of the event, where `ts_event`
is the time the source vouches for: the exchange time of a book (or the moment a live subscription
last confirmed it), a venue's trade time, a forecast's fetch time, an observation's time.

Clocks disagree a little: a timestamp up to `skew_s` in the future counts as age 0; one further in
the future is not trusted at all (infinitely old), since a source whose clock is that far off may be
just as wrong about everything else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

Input = Literal["book", "spot", "forecast", "obs"]


@dataclass(frozen=True, slots=True)
class FreshnessLimits:
    """The oldest each kind of input may be and still be used (seconds), and the clock-skew allowance."""

    book_s: float = 30.0
    spot_s: float = 10.0
    forecast_s: float = 3 * 3600.0
    obs_s: float = 2 * 3600.0
    skew_s: float = 5.0

    def age_s(self, ts: datetime, now: datetime) -> float:
        """Seconds from the source's timestamp to now (0 within the skew allowance; inf beyond it)."""
        age = (now - ts).total_seconds()
        if age < -self.skew_s:
            return math.inf
        return max(age, 0.0)

    def limit(self, kind: Input) -> float:
        """The maximum age of one kind of input."""
        return getattr(self, f"{kind}_s")

    def fresh(self, kind: Input, ts: datetime | None, now: datetime) -> bool:
        """True when an input of `kind` stamped `ts` may be used at `now` (None: never seen, not fresh)."""
        return ts is not None and self.age_s(ts, now) <= self.limit(kind)

    def as_dict(self) -> dict[str, float]:
        """Plain data for status replies."""
        return asdict(self)
