"""The simulated world: an exchange engine, its catalog, hidden truths and seeded outcomes, on a controllable clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

from libs.common.matching.engine import MatchingEngine
from libs.common.matching.types import Result
from services.sim.catalog import Catalog, EventInfo, MarketInfo, SeriesInfo


class World:
    """Everything the simulator knows, including what the desk must not: each market's true probability and outcome.

    Time comes only from `clock` (UTC-aware), so tests drive it. `rng` is the world's shared random stream
    (background traders draw from it); scenario facts come from `rng_for(...)` streams keyed by what they
    describe, so an event's outcome depends on the seed and its ticker only, never on how much trading
    happened before it was listed.
    """

    def __init__(self, seed: int, clock: Callable[[], datetime]) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = clock
        id_rng = random.Random(f"{seed}:ids")
        self.engine = MatchingEngine(clock, ids=lambda: f"{id_rng.getrandbits(128):032x}")
        self.catalog = Catalog()
        self.truth: dict[str, float] = {}  # market ticker -> true P(YES)
        self.outcomes: dict[str, Result] = {}  # market ticker -> how it will settle
        self.facts: dict[str, dict[str, Any]] = {}  # event ticker (and btc:<close>) -> the underlying truth
        self.traders: Any = None  # BackgroundTraders, when attached
        self.weather: Any = None  # the stations' WeatherTruth, created by the weather scenarios
        self.btc: Any = None  # the BTC price path (BtcPath), created by the first BTC listing
        # event ticker -> (the ideal P(YES) of its markets at a time, how long one answer stays good in s):
        # what a perfect forecaster with the desk's information would say (tests and the bench; never the desk).
        self.ideals: dict[str, tuple[Callable[[datetime], dict[str, float]], float]] = {}
        self._ideal_cache: dict[tuple[str, int], dict[str, float]] = {}
        # Scenario hooks called on every advance(now), e.g. to list the next hour's BTC events.
        self.rollers: list[Callable[[World, datetime], None]] = []
        self._unsettled: dict[str, MarketInfo] = {}  # markets not finalized yet: what advance() looks at

    def rng_for(self, *key: object) -> random.Random:
        """A random stream determined by the seed and `key` alone (string seeding is stable across runs)."""
        return random.Random(":".join(str(k) for k in (self.seed, *key)))

    def open_account(self, user_id: str, balance: int) -> None:
        """Open (or refund to `balance` ticks available) a user's exchange account."""
        self.engine.open_account(user_id, balance)

    def add_series(self, series: SeriesInfo) -> None:
        """List a series (idempotent)."""
        if series.ticker not in self.catalog.series:
            self.catalog.add_series(series)

    def add_event(self, event: EventInfo) -> None:
        """List an event."""
        self.catalog.add_event(event)

    def add_market(self, info: MarketInfo, truth: float, outcome: Result) -> None:
        """List a market with its hidden truth and outcome; it opens at its open_time (now, if that has passed)."""
        series = self.catalog.series[info.series_ticker]
        self.catalog.add_market(info)
        self.engine.add_market(info.spec(series))
        self.truth[info.ticker] = truth
        self.outcomes[info.ticker] = outcome
        self._unsettled[info.ticker] = info
        self._step(info, self.clock())

    def advance(self, now: datetime | None = None, only: str | None = None) -> None:
        """List what scenarios schedule, open and close markets whose times have come, then settle what is due."""
        now = now or self.clock()
        if only is not None:
            self._step(self._unsettled[only], now)
            return
        for roll in self.rollers:
            roll(self, now)
        for info in list(self._unsettled.values()):
            self._step(info, now, settle=False)
        self.settle_due(now)

    def _step(self, info: MarketInfo, now: datetime, *, settle: bool = True) -> None:
        """initialized -> active at open_time; active/paused -> closed at close_time."""
        status = self.engine.market(info.ticker).status
        if status == "initialized" and now >= info.open_time:
            self.engine.set_status(info.ticker, "active")
            status = "active"
        if status in ("active", "inactive") and now >= info.close_time:
            self.engine.set_status(info.ticker, "closed")
        if settle:
            self.settle_due(now, only=info.ticker)

    def settle_due(self, now: datetime | None = None, only: str | None = None) -> list[str]:
        """Settle closed markets whose expected expiration has passed, with their seeded outcomes; returns them."""
        now = now or self.clock()
        done = []
        todo = list(self._unsettled.items()) if only is None else [(only, self._unsettled[only])]
        for ticker, info in todo:
            spec = self.engine.market(ticker)
            if spec.status == "finalized":  # settled from outside (a test, an operator)
                del self._unsettled[ticker]
                continue
            due = info.expected_expiration_time or info.close_time
            if spec.status in ("closed", "determined") and now >= due:
                info.expiration_value = self.expiration_value(info.event_ticker)
                self.engine.settle(ticker, self.outcomes[ticker])
                del self._unsettled[ticker]
                done.append(ticker)
        return done

    def expiration_value(self, event_ticker: str) -> str:
        """The underlying value a market settles on, as Kalshi reports it (`expiration_value`): the day's
        official max (°F) for weather, the settlement index price for BTC; "" when the sim has none."""
        facts = self.facts.get(event_ticker) or {}
        if facts.get("kind") == "weather":
            return str(facts["true_max_f"])
        if facts.get("kind") == "btc_event":
            return f"{facts['settle_price']:.2f}"
        return ""

    def ideal_p(self, ticker: str, now: datetime | None = None) -> float:
        """The ideal P(YES) of a market at `now`: its event's ideal if the scenario gave one, else its truth."""
        event = self.catalog.markets[ticker].event_ticker
        entry = self.ideals.get(event)
        if entry is None:
            return self.truth[ticker]
        fn, every_s = entry
        now = now or self.clock()
        key = (event, int(now.timestamp() // every_s))
        got = self._ideal_cache.get(key)
        if got is None:
            if len(self._ideal_cache) > 4096:  # a long-running sim: forget the oldest answers
                for old in list(self._ideal_cache)[:2048]:
                    del self._ideal_cache[old]
            got = self._ideal_cache[key] = fn(now)
        return got[ticker]

    def has_ideal(self, ticker: str) -> bool:
        """Whether the market's ideal probability moves with time (a scenario registered one)."""
        return self.catalog.markets[ticker].event_ticker in self.ideals

    def active_markets(self) -> list[str]:
        """Markets trading now, in listing order."""
        return [t for t in self._unsettled if self.engine.market(t).status == "active"]
