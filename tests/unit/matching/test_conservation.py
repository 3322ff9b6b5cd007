"""Property: under seeded random flow money is conserved, no balance goes negative, the book never crosses."""

from __future__ import annotations

import random

import pytest

from libs.common.matching.types import BookDelta, ExchangeError
from libs.common.money import ONE_DOLLAR, PriceGrid
from tests.unit.matching.kit import FUNDS, T, make_rig, req

USERS = ("a", "b", "c")
# What random flow may legitimately be refused for; anything else is a bug.
EXPECTED_REFUSALS = {"available_balance_too_low", "invalid_order", "order_already_exists", "invalid_order_size"}


def _random_action(rig: object, rng: random.Random, prices: list[int], step: int) -> None:
    e = rig.engine  # type: ignore[attr-defined]
    user = rng.choice(USERS)
    roll = rng.random()
    resting = e.orders(user, status="resting")
    if roll < 0.10 and resting:
        e.cancel(user, rng.choice(resting).order_id)
    elif roll < 0.15 and resting:
        o = rng.choice(resting)
        e.decrease(user, o.order_id, reduce_by=rng.randrange(1, o.remaining_count + 1))
    elif roll < 0.25 and resting:
        o = rng.choice(resting)
        e.amend(user, o.order_id, ticker=T, book_side=o.book_side, price=rng.choice(prices),
                count=o.fill_count + rng.randrange(1, 3_000))
    else:
        e.place(user, req(rng.choice(["bid", "ask"]), rng.choice(prices), rng.randrange(1, 3_000),
                          time_in_force=rng.choice(["good_till_canceled", "immediate_or_cancel", "fill_or_kill"]),
                          self_trade_prevention_type=rng.choice(["taker_at_cross", "maker"]),
                          post_only=rng.random() < 0.1, reduce_only=rng.random() < 0.1,
                          client_order_id=f"k{rng.randrange(step + 50)}" if rng.random() < 0.2 else None))


@pytest.mark.parametrize(("grid", "seed"), [(PriceGrid.linear_cent(), 5), (PriceGrid([(0, ONE_DOLLAR, 1)]), 6)])
def test_random_flow_conserves_money(grid: PriceGrid, seed: int) -> None:
    rig = make_rig(fee_type="quadratic_with_maker_fees", grid=grid, funds=FUNDS // 10)  # $100: limits bind
    e = rig.engine
    exact = grid == PriceGrid.linear_cent()  # whole-cent prices: every cost is a whole tick
    prices = list(range(100, ONE_DOLLAR, 100)) if exact else list(range(1, ONE_DOLLAR, 37))
    rng = random.Random(seed)
    refused: dict[str, int] = {}
    for step in range(2_000):
        try:
            _random_action(rig, rng, prices, step)
        except ExchangeError as err:
            assert err.code in EXPECTED_REFUSALS, (err.code, err.message)
            refused[err.code] = refused.get(err.code, 0) + 1
        assert all(e.balance(u) >= 0 for u in USERS), step
        yes, no = e.book(T, 1)
        if yes and no:
            assert yes[-1][0] + no[-1][0] < ONE_DOLLAR, f"book crossed at step {step}"
    assert len(e.trades(T)) > 250 and refused.get("available_balance_too_low", 0) > 10  # it traded, and hit limits

    positions = [p for u in USERS for p in e.positions(u)]
    longs = sum(max(p.position, 0) for p in positions)
    assert longs == sum(max(-p.position, 0) for p in positions)  # every YES has a NO on the other side
    fees = sum(p.fees_paid for p in positions)
    assert fees == sum(f.fee for u in USERS for f in e.fills(u)) > 0
    total = 3 * (FUNDS // 10)
    kept = total - sum(e.cash(u) for u in USERS) - fees - longs * ONE_DOLLAR // 100  # $1 per open pair
    if exact:
        assert kept == 0
    else:
        assert 0 <= kept <= len(e.trades(T))  # buyers round up: the exchange keeps sub-tick dust, never pays it

    deltas: dict[tuple[str, int], int] = {}
    for d in rig.of(BookDelta):
        deltas[(d.side, d.price)] = deltas.get((d.side, d.price), 0) + d.delta
    yes, no = e.book(T)
    assert {k: v for k, v in deltas.items() if v} == {**{("yes", p): c for p, c in yes},
                                                      **{("no", p): c for p, c in no}}

    for u in USERS:  # with nothing resting, nothing is reserved
        e.cancel_all(u)
        assert e.balance(u) == e.cash(u)
    e.set_status(T, "closed")
    e.settle(T, rng.choice(["yes", "no"]))
    assert total - sum(e.cash(u) for u in USERS) - fees == kept  # settlement paid out exactly the pairs
    assert all(e.balance(u) >= 0 for u in USERS)
