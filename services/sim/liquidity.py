"""Background traders: market makers quoting around each market's hidden truth, and takers trading through.

They give the simulated books realistic depth and flow. Every agent believes the same fair value,
`belief + mispricing[ticker]`: with no mispricing the books centre on the belief; a mispricing shifts the
whole crowd (makers and takers alike), so the book stays two-sided and stays wrong — which is how a
test builds a "mispriced vs fair" market for the desk to find.

The belief is the market's fixed truth, or, where the scenario gives an ideal that moves with the news
(`world.ideals`: honest weather days, BTC hours), a crowd that learns: the ideal as it stood
`crowd_lag_s` ago, with a logit-normal error redrawn every `crowd_every_s`, so the crowd improves as
information arrives and is a real baseline for the desk's model, neither the truth nor the listing prior.

Guarantees: makers bid at or below fair and offer at or above it (except that a far-out strike still gets
a 1¢ bid and a 99¢ offer, as on Kalshi); takers pay at most `max_cross` beyond fair; every agent's
position in a market stays within `max_inventory`. All randomness comes from
`world.rng`, so a seed and a sequence of `step` calls give the same books every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from libs.common.matching.types import BookSide, ExchangeError, OrderRequest
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR
from services.sim.world import World

MAKERS = ("mm1", "mm2", "mm3")
TAKERS = ("flow1", "flow2")
FUNDS = 1_000_000 * ONE_DOLLAR
_MIN_TICK, _MAX_TICK = 100, ONE_DOLLAR - 100  # far-out strikes still get a 1¢ / 99¢ quote, as on Kalshi


@dataclass
class BackgroundTraders:
    """Deterministic (seeded by the world) makers and takers; `step(n)` takes n actions."""

    world: World
    mispricing: dict[str, float] = field(default_factory=dict)  # ticker -> shift of the crowd's fair value
    half_spread: float = 0.02  # makers quote fair -/+ this (before noise and inventory skew)
    noise: float = 0.01  # uniform noise on each requote's fair value; keep it below half_spread
    max_inventory: int = 500 * ONE_CONTRACT  # per agent and market, in 1/100 contract
    take_probability: float = 0.25  # share of actions that are takers
    max_cross: float = 0.03  # a taker pays at most this much beyond fair
    # A realistic retail crowd, not an oracle: half an hour behind the news, and a logit error of 0.5 (a fair
    # 50 % market is believed anywhere from about 38 % to 62 %).
    crowd_lag_s: float = 1800.0  # the crowd hears the news this late (markets with a moving ideal)
    crowd_noise: float = 0.5  # logit-sd of the crowd's error about the (lagged) ideal
    crowd_every_s: float = 1800.0  # how long one crowd error lasts
    actions: int = 0
    _cursor: int = field(default=0, repr=False)
    _quotes: dict[tuple[str, str], list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for user in self.users:
            self.world.open_account(user, FUNDS)
        self.world.traders = self

    @property
    def users(self) -> tuple[str, ...]:
        """The agents' user ids (makers, then takers)."""
        return MAKERS + TAKERS

    def belief(self, ticker: str) -> float:
        """The crowd's P(YES) before any mispricing: the fixed truth, or a lagged, noisy ideal."""
        world = self.world
        if not world.has_ideal(ticker):
            return world.truth[ticker]
        now = world.clock()
        p = min(max(world.ideal_p(ticker, now - timedelta(seconds=self.crowd_lag_s)), 1e-4), 1 - 1e-4)
        z = world.rng_for("crowd", ticker, int(now.timestamp() // self.crowd_every_s)).gauss(0, 1)
        return 1.0 / (1.0 + math.exp(-(math.log(p / (1 - p)) + self.crowd_noise * z)))

    def fair(self, ticker: str) -> float:
        """What the crowd believes P(YES) is: its belief shifted by the market's mispricing, kept in (0, 1)."""
        return min(max(self.belief(ticker) + self.mispricing.get(ticker, 0.0), 0.0), 1.0)

    def step(self, n: int = 1) -> int:
        """Take `n` actions on active markets (makers requote them in turn, takers pick at random)."""
        markets = self.world.active_markets()
        if not markets:
            return 0
        rng = self.world.rng
        for _ in range(n):
            if rng.random() < self.take_probability:
                self._take(rng.choice(TAKERS), rng.choice(markets))
            else:
                # Round-robin, so every market is requoted every len(markets) maker actions.
                self._quote(rng.choice(MAKERS), markets[self._cursor % len(markets)])
                self._cursor += 1
            self.actions += 1
        return n

    def _tick(self, ticker: str, p: float, side: Literal["down", "up"]) -> int | None:
        """A probability as a grid price, rounded away from fair; bids in [1¢, 98¢], asks in [2¢, 99¢]."""
        grid = self.world.engine.market(ticker).grid
        ticks = p * ONE_DOLLAR
        if side == "down":  # the epsilon keeps 0.55 * 10_000 = 5499.999... from rounding a cent away
            return grid.round_down(min(max(math.floor(ticks + 1e-6), _MIN_TICK), _MAX_TICK - _MIN_TICK))
        return grid.round_up(min(max(math.ceil(ticks - 1e-6), 2 * _MIN_TICK), _MAX_TICK))

    def _quote(self, user: str, ticker: str) -> None:
        """Replace this maker's quotes in one market with a fresh bid and ask around fair."""
        engine, rng = self.world.engine, self.world.rng
        for order_id in self._quotes.pop((user, ticker), []):
            try:
                engine.cancel(user, order_id)
            except ExchangeError:
                pass  # filled or cancelled since: nothing to pull
        fair = self.fair(ticker)
        pos = engine.position(user, ticker)
        skew = -0.01 * pos / self.max_inventory  # lean against inventory
        centre = fair + rng.uniform(-self.noise, self.noise) + skew
        # Never bid above fair nor offer below it, whatever the noise and skew did.
        bid = self._tick(ticker, min(centre - self.half_spread, fair), "down")
        ask = self._tick(ticker, max(centre + self.half_spread, fair), "up")
        if bid is not None and ask is not None and bid >= ask:  # only at the 1¢ / 99¢ clamps
            bid = self.world.engine.market(ticker).grid.next_below(ask)
        size = rng.randrange(10, 60) * ONE_CONTRACT
        placed = []
        quotes: tuple[tuple[BookSide, int | None, int], ...] = (
            ("bid", bid, self.max_inventory - pos), ("ask", ask, self.max_inventory + pos))
        for side, price, room in quotes:
            if price is None or room <= 0:
                continue
            order_id = self._send(user, OrderRequest(
                ticker=ticker, book_side=side, price=price, count=min(size, room),
                time_in_force="good_till_canceled", self_trade_prevention_type="maker"))
            if order_id is not None:
                placed.append(order_id)
        if placed:
            self._quotes[(user, ticker)] = placed

    def _take(self, user: str, ticker: str) -> None:
        """Cross the spread when the best price on one side looks acceptable against fair."""
        engine, rng = self.world.engine, self.world.rng
        yes, no = engine.book(ticker, 1)
        fair = self.fair(ticker)
        pos = engine.position(user, ticker)
        size = rng.randrange(1, 11) * ONE_CONTRACT
        tolerance = rng.uniform(0.0, self.max_cross)
        if rng.random() < 0.5:
            if no and pos < self.max_inventory:
                ask = ONE_DOLLAR - no[-1][0]  # best YES ask = $1 - best NO bid
                if ask <= (fair + tolerance) * ONE_DOLLAR:
                    self._send(user, OrderRequest(ticker=ticker, book_side="bid", price=ask,
                                                  count=min(size, self.max_inventory - pos),
                                                  time_in_force="immediate_or_cancel",
                                                  self_trade_prevention_type="taker_at_cross"))
        elif yes and pos > -self.max_inventory:
            bid = yes[-1][0]
            if bid >= (fair - tolerance) * ONE_DOLLAR:
                self._send(user, OrderRequest(ticker=ticker, book_side="ask", price=bid,
                                              count=min(size, self.max_inventory + pos),
                                              time_in_force="immediate_or_cancel",
                                              self_trade_prevention_type="taker_at_cross"))

    def _send(self, user: str, req: OrderRequest) -> str | None:
        try:
            res = self.world.engine.place(user, req)
        except ExchangeError:
            return None  # a paused or closing market: skip this action
        return res.order.order_id if res.order.status == "resting" else None
