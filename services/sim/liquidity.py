"""Background traders: market makers quoting around each market's hidden truth, and takers trading through.

They give the simulated books realistic depth and flow. `mispricing[ticker]` shifts what the makers
believe (in probability), which is how a test builds a deliberately mispriced market.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.common.matching.types import ExchangeError, OrderRequest
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR
from services.sim.world import World

MAKERS = ("mm1", "mm2")
TAKERS = ("flow1",)
FUNDS = 1_000_000 * ONE_DOLLAR


@dataclass
class BackgroundTraders:
    """Deterministic (seeded by the world) makers and takers; call `step(n)` to act n times."""

    world: World
    mispricing: dict[str, float] = field(default_factory=dict)
    half_spread: float = 0.02
    noise: float = 0.01
    max_inventory: int = 500 * ONE_CONTRACT
    take_probability: float = 0.25
    actions: int = 0

    def __post_init__(self) -> None:
        for user in MAKERS + TAKERS:
            self.world.engine.open_account(user, FUNDS)
        self.world.traders = self

    def fair(self, ticker: str) -> float:
        """What the makers believe P(YES) is."""
        return min(max(self.world.truth[ticker] + self.mispricing.get(ticker, 0.0), 0.01), 0.99)

    def _price(self, p: float, ticker: str, down: bool) -> int | None:
        grid = self.world.engine.market(ticker).grid
        # Far-out strikes still get a 1¢/99¢ quote, as on Kalshi.
        ticks = min(max(round(p * ONE_DOLLAR), 100), ONE_DOLLAR - 100)
        return grid.round_down(ticks) if down else grid.round_up(ticks)

    def _position(self, user: str, ticker: str) -> int:
        return next((p.position for p in self.world.engine.positions(user) if p.ticker == ticker), 0)

    def _quote(self, user: str, ticker: str) -> None:
        engine, rng = self.world.engine, self.world.rng
        for o in engine.orders(user, ticker=ticker, status="resting"):
            engine.cancel(user, o.order_id)
        fair = self.fair(ticker) + rng.uniform(-self.noise, self.noise)
        pos = self._position(user, ticker)
        skew = -0.01 * pos / self.max_inventory  # lean against inventory
        bid = self._price(fair - self.half_spread + skew, ticker, down=True)
        ask = self._price(fair + self.half_spread + skew, ticker, down=False)
        size = rng.randrange(5, 50) * ONE_CONTRACT
        for side, price, room in (("bid", bid, self.max_inventory - pos), ("ask", ask, self.max_inventory + pos)):
            if price is None or room <= 0:
                continue
            self._send(user, OrderRequest(ticker=ticker, book_side=side, price=price, count=min(size, room),
                                          time_in_force="good_till_canceled",
                                          self_trade_prevention_type="maker"))  # type: ignore[arg-type]

    def _take(self, user: str, ticker: str) -> None:
        engine, rng = self.world.engine, self.world.rng
        yes, no = engine.book(ticker, 1)
        truth = self.world.truth[ticker]
        # Informed-ish flow: buys what looks cheap against the truth, with noise.
        if no and rng.random() < 0.5:
            ask = ONE_DOLLAR - no[-1][0]
            if ask <= (truth + rng.uniform(-0.03, 0.05)) * ONE_DOLLAR:
                self._send(user, OrderRequest(ticker=ticker, book_side="bid", price=ask,
                                              count=rng.randrange(1, 10) * ONE_CONTRACT,
                                              time_in_force="immediate_or_cancel",
                                              self_trade_prevention_type="taker_at_cross"))
        elif yes:
            bid = yes[-1][0]
            if bid >= (truth - rng.uniform(-0.03, 0.05)) * ONE_DOLLAR:
                self._send(user, OrderRequest(ticker=ticker, book_side="ask", price=bid,
                                              count=rng.randrange(1, 10) * ONE_CONTRACT,
                                              time_in_force="immediate_or_cancel",
                                              self_trade_prevention_type="taker_at_cross"))

    def _send(self, user: str, req: OrderRequest) -> None:
        try:
            self.world.engine.place(user, req)
        except ExchangeError:
            pass  # a paused or closing market, or an edge case of the grid: skip this action

    def step(self, n: int = 1) -> int:
        """Act `n` times on random active markets; returns how many actions were taken."""
        markets = self.world.active_markets()
        if not markets:
            return 0
        rng = self.world.rng
        for _ in range(n):
            ticker = rng.choice(markets)
            if rng.random() < self.take_probability:
                self._take(rng.choice(TAKERS), ticker)
            else:
                self._quote(rng.choice(MAKERS), ticker)
            self.actions += 1
        return n
