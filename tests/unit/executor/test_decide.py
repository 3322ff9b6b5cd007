"""The pure decision: every decline reason, maker/taker pricing, sizing against holdings — no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from libs.common.events import Signal, utcnow
from libs.common.market_view import MarketState, MarketView
from services.executor.decide import Config, Context, Decline, Holdings, client_order_id, decide
from services.executor.risk import Intent
from tests.kit.desk import desk_settings
from tests.kit.factories import WX_BRACKET, book_update, market_definition, signal_event

CFG = Config.from_settings(desk_settings())
BANKROLL = 1_000 * 10_000  # $1,000


@dataclass
class Working:
    client_order_id: str
    status: str = "resting"
    remaining_count: int = 500


def market(yes_bid: int = 3_000, yes_ask: int = 3_400, **defn: object) -> MarketState:
    """A market quoted YES `yes_bid` / `yes_ask` (NO bid = $1 - ask)."""
    view = MarketView()
    view.on_market(market_definition(WX_BRACKET, **defn))
    view.on_book(book_update(WX_BRACKET, yes_bids=((yes_bid, 5_000),), no_bids=((10_000 - yes_ask, 5_000),)))
    st = view.get(WX_BRACKET)
    assert st is not None
    return st


def ctx(**kw: object) -> Context:
    return Context(**{"now": utcnow(), "bankroll": BANKROLL, **kw})  # type: ignore[arg-type]


NOTHING = Holdings()


def run(sig: Signal | None = None, st: MarketState | None = None, holdings: Holdings = NOTHING,
        context: Context | None = None, fresh: bool = True) -> Intent | Decline:
    sig = sig or signal_event(p_model=0.50, confidence=0.9)
    return decide(sig, st if st is not None else market(), holdings, context or ctx(), CFG, book_fresh=fresh)


def reason(result: Intent | Decline) -> str:
    assert isinstance(result, Decline), result
    return result.reason


def test_a_mispriced_market_gets_a_post_only_bid_one_tick_better_than_the_best_bid() -> None:
    sig = signal_event(p_model=0.50, confidence=0.9)
    intent = run(sig)
    assert isinstance(intent, Intent)
    assert (intent.book_side, intent.yes_price, intent.post_only, intent.time_in_force) == (
        "bid", 3_100, True, "good_till_canceled")
    assert intent.client_order_id == client_order_id(sig.id, "yes", 0) and intent.count > 0
    assert intent.signal_id == sig.id and intent.leg == "yes"


def test_a_large_edge_takes_the_ask_immediately_or_cancels() -> None:
    intent = run(signal_event(p_model=0.95, confidence=0.9))
    assert isinstance(intent, Intent)
    assert (intent.yes_price, intent.post_only, intent.time_in_force) == (3_400, False, "immediate_or_cancel")


def test_buy_no_is_an_ask_in_yes_terms() -> None:
    intent = run(signal_event(p_model=0.10, action="buy_no", confidence=0.9), market(6_000, 6_400))
    assert isinstance(intent, Intent) and intent.book_side == "ask" and intent.leg == "no"


@pytest.mark.parametrize(("why", "kw"), [
    ("expired", {"sig": "expired"}),
    ("paused", {"context": {"blocked": "paused"}}),
    ("family_off", {"context": {"blocked": "family_off"}}),
    ("daily_loss", {"context": {"daily_loss_tripped": True}}),
    ("low_confidence", {"sig": "unsure"}),
    ("market_closed", {"st": {"status": "closed"}}),
    ("market_closed", {"st": {"close_time": "past"}}),
    ("stale_book", {"fresh": False}),
    ("no_edge", {"sig": "fair"}),
    ("no_bankroll", {"context": {"bankroll": 0}}),
])
def test_every_decline_reason(why: str, kw: dict) -> None:
    now = utcnow()
    sigs = {"expired": signal_event(p_model=0.5, valid_until=now - timedelta(seconds=1)),
            "unsure": signal_event(p_model=0.5, confidence=0.01),
            "fair": signal_event(p_model=0.32, confidence=0.9)}
    sig = sigs.get(kw.get("sig", ""), signal_event(p_model=0.5, confidence=0.9))
    defn = kw.get("st", {})
    if defn.get("close_time") == "past":
        defn = {"close_time": now - timedelta(minutes=1)}
    result = run(sig, market(**defn), context=ctx(**kw.get("context", {})), fresh=kw.get("fresh", True))
    assert reason(result) == why
    assert result.intent.client_order_id == client_order_id(sig.id, "yes", 0)  # recorded under its own id


def test_unknown_market_and_an_empty_book() -> None:
    assert reason(decide(signal_event(p_model=0.5), None, Holdings(), ctx(), CFG, book_fresh=False)) \
        == "unknown_market"
    view = MarketView()
    view.on_market(market_definition(WX_BRACKET))
    view.on_book(book_update(WX_BRACKET, yes_bids=(), no_bids=()))
    assert reason(run(st=view.get(WX_BRACKET))) in ("stale_book", "empty_book")


def test_a_working_order_is_moved_not_doubled_and_a_full_holding_is_at_target() -> None:
    d = run(holdings=Holdings(working=[Working("kd-other")]))
    assert reason(d) == "order_working" and d.reprice_to == 3_100
    taker = run(signal_event(p_model=0.95, confidence=0.9), holdings=Holdings(working=[Working("kd-other")]))
    assert reason(taker) == "order_working" and taker.reprice_to is None  # post-only cannot become a taker
    want = run()
    assert isinstance(want, Intent)
    assert reason(run(holdings=Holdings(held=want.count))) == "at_target"
    partial = run(holdings=Holdings(held=want.count // 2))
    assert isinstance(partial, Intent) and partial.count == want.count - want.count // 2


def test_an_order_working_on_the_other_leg_declines_the_entry() -> None:
    assert reason(run(holdings=Holdings(opposite=1))) == "opposite_working"
    assert reason(run(holdings=Holdings(opposite=1, working=[Working("kd-other")]))) == "opposite_working"
    assert isinstance(run(holdings=Holdings(opposite=0)), Intent)


def test_holdings_find_the_intents_own_order() -> None:
    h = Holdings(working=[Working("kd-a"), Working("kd-b", status="intent")])
    assert h.own("kd-b") is h.working[1] and h.own("kd-c") is None


def test_intent_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Intent("kd-x", None, "yes", 0, "weather", "S", "E", "T", "bid", 3_000, 100)  # type: ignore[misc]
