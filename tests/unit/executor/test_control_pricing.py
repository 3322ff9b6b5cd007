"""Control-KV parsing (fail safe) and maker-first pricing / arbitrage against a book top."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from libs.common.config import Mode
from libs.common.edge import BookTop
from libs.common.money import PriceGrid, fee
from services.executor.control import ControlState
from services.executor.desk import client_order_id
from services.executor.pricing import arbitrage, quote

NOW = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
GRID = PriceGrid.linear_cent()


def test_control_values_and_safe_defaults() -> None:
    st = ControlState()
    assert st.blocks(Mode.SIM, "weather", NOW) is None
    st.apply("paused", b"true")
    assert st.blocks(Mode.SIM, "weather", NOW) == "paused"
    st.apply("paused", b'{"paused": false}')
    assert st.blocks(Mode.SIM, None, NOW) is None
    st.apply("paused", b"maybe?")  # unreadable: treated as paused
    assert st.paused and st.pause_reason == "unreadable control value"
    st.apply("paused", None)  # deleted: not paused
    assert not st.paused
    st.apply("family.weather.enabled", b"false")
    assert st.blocks(Mode.SIM, "weather", NOW) == "family_off" and st.blocks(Mode.SIM, "btc", NOW) is None
    st.apply("mode", b"paper")
    assert st.blocks(Mode.SIM, "btc", NOW) == "mode_changed"


def test_live_needs_an_unexpired_arming() -> None:
    st = ControlState(mode="live")
    assert st.blocks(Mode.LIVE, None, NOW) == "live_not_armed"
    st.apply("live_armed_until", (NOW + timedelta(minutes=5)).isoformat().encode())
    assert st.blocks(Mode.LIVE, None, NOW) is None
    assert st.blocks(Mode.LIVE, None, NOW + timedelta(minutes=6)) == "live_not_armed"
    st.apply("live_armed_until", b"2026-11-22T20:00:00")  # naive time: not trusted
    assert st.blocks(Mode.LIVE, None, NOW) == "live_not_armed"


def test_maker_improves_the_bid_by_one_tick_and_takes_only_above_the_taker_threshold() -> None:
    top = BookTop(best_yes_bid=3000, best_no_bid=6600, yes_bid_size=500, no_bid_size=700)  # YES 30/34
    q = quote(0.45, "yes", top, GRID, fee_type="quadratic", fee_multiplier=Decimal(1), min_edge=200,
              taker_min_edge=2000)
    assert (q.how, q.yes_price, q.book_side) == ("maker", 3100, "bid")
    assert q.edge == 4500 - 3100 - fee(100, 3100, rate="maker", fee_type="quadratic", multiplier=1)
    t = quote(0.45, "yes", top, GRID, fee_type="quadratic", fee_multiplier=Decimal(1), min_edge=200,
              taker_min_edge=500)
    assert (t.how, t.yes_price, t.available) == ("taker", 3400, 700)
    n = quote(0.20, "no", top, GRID, fee_type="quadratic", fee_multiplier=Decimal(1), min_edge=200,
              taker_min_edge=2000)
    assert (n.how, n.book_side, n.yes_price, n.leg_price) == ("maker", "ask", 3300, 6700)
    none = quote(0.32, "yes", top, GRID, fee_type="quadratic", fee_multiplier=Decimal(1), min_edge=200,
                 taker_min_edge=2000)
    assert none.how is None and none.reason == "no_edge"


def test_arbitrage_only_when_both_asks_and_fees_stay_under_a_dollar() -> None:
    # YES ask = 1 - 0.55 = 0.45 and NO ask = 1 - 0.50 = 0.50: 95c + fees for $1.
    crossed = BookTop(best_yes_bid=5000, best_no_bid=5500, yes_bid_size=300, no_bid_size=200)
    arb = arbitrage(crossed, fee_type="quadratic", fee_multiplier=Decimal(1))
    assert arb is not None and (arb.yes_price, arb.no_price, arb.count) == (4500, 5000, 200)
    fees = fee(200, 4500, rate="taker", fee_type="quadratic", multiplier=1) + fee(
        200, 5000, rate="taker", fee_type="quadratic", multiplier=1)
    assert arb.profit_per_contract == 500 - -(-fees * 100 // 200)  # fee per contract rounded up
    normal = BookTop(best_yes_bid=4800, best_no_bid=5000, yes_bid_size=300, no_bid_size=200)
    assert arbitrage(normal, fee_type="quadratic", fee_multiplier=Decimal(1)) is None


def test_client_order_ids_are_deterministic_and_distinct() -> None:
    a = client_order_id("sig:X:1", "yes", 0)
    assert a == client_order_id("sig:X:1", "yes", 0) and a.startswith("kd-")
    assert len({a, client_order_id("sig:X:1", "no", 0), client_order_id("sig:X:1", "yes", 1)}) == 3


def test_exit_rules() -> None:
    from services.executor.desk import _exit_reason
    from tests.kit.desk import signal

    since = NOW - timedelta(minutes=10)
    avg = 4000  # bought at 40c
    assert _exit_reason({"stop_loss": 0.10}, avg, 3100, since, NOW, None, "yes") is None
    assert _exit_reason({"stop_loss": 0.10}, avg, 3000, since, NOW, None, "yes") == "stop_loss"
    assert _exit_reason({"take_profit": 0.80}, avg, 7900, since, NOW, None, "yes") is None
    assert _exit_reason({"take_profit": 0.80}, avg, 8000, since, NOW, None, "yes") == "take_profit"
    assert _exit_reason({"max_hold_s": 900}, avg, 4000, since, NOW, None, "yes") is None
    assert _exit_reason({"max_hold_s": 300}, avg, 4000, since, NOW, None, "yes") == "max_hold"
    sig = signal("X", "E", "S", 0.30)  # the model now says YES is worth 30c; the bid is 40c
    assert _exit_reason({"edge_reversal": 0.05}, avg, 4000, since, NOW, sig, "yes") == "edge_reversal"
    assert _exit_reason({"edge_reversal": 0.15}, avg, 4000, since, NOW, sig, "yes") is None
    # Holding NO: the NO value is 70c, far above a 40c NO bid — no reversal.
    assert _exit_reason({"edge_reversal": 0.05}, avg, 4000, since, NOW, sig, "no") is None
    assert _exit_reason({}, avg, 100, since, NOW, sig, "yes") is None  # no rules: hold to settlement
