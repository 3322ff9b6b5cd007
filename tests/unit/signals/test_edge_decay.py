"""Edge-decay alerts: raised once when the model turns against a held position; hedged and stale skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

from libs.common.config import Mode, load_settings
from services.signals.pipeline import EdgeDecayMonitor, ModelP, SignalPipeline
from tests.kit.factories import book_update, market_definition

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def pipeline() -> SignalPipeline:
    async def emit(_: object) -> None:
        return None

    p = SignalPipeline(emit, mode=Mode.SIM, risk=load_settings().risk, clock=lambda: NOW)
    for t in ("E-A", "E-B", "F-A"):
        p.view.on_market(market_definition(t, ts_event=NOW, event_ticker=t.split("-")[0], series_ticker="KXHIGHNY"))
        p.weather_p[t] = ModelP(0.40, 0.9, "wx_ens", {}, NOW)
    return p


def book(p: SignalPipeline, ticker: str, yes_bid: int, no_bid: int, age_s: float = 0.0) -> None:
    """A book whose source timestamp is `age_s` old; it replaces the held one (a stale one by a fresh one too)."""
    p.view.by_ticker[ticker].book = None
    p.view.on_book(book_update(ticker, ((yes_bid, 100),), ((no_bid, 100),), ts_event=NOW - timedelta(seconds=age_s),
                               series_ticker="KXHIGHNY", seq=1))


def test_alert_once_when_the_bid_beats_the_model_then_rearm() -> None:
    p = pipeline()
    m = EdgeDecayMonitor(p, margin=0.05)
    book(p, "F-A", 4_200, 5_500)
    assert m.check({"F-A": 500}) == []  # bid 0.42 vs p 0.40: within the margin
    book(p, "F-A", 4_800, 5_000)
    [alert] = m.check({"F-A": 500})
    assert alert["side"] == "yes" and alert["exit_value"] == 0.48 and alert["dedupe_key"] == "edge_decay:F-A:yes"
    assert m.check({"F-A": 500}) == []  # deduplicated
    book(p, "F-A", 4_000, 5_500)
    assert m.check({"F-A": 500}) == []  # recovered: re-armed
    book(p, "F-A", 4_900, 5_000)
    assert len(m.check({"F-A": 500})) == 1


def test_no_positions_hedged_and_stale_books_are_skipped() -> None:
    p = pipeline()
    m = EdgeDecayMonitor(p, margin=0.05)
    book(p, "E-A", 9_000, 500)
    book(p, "E-B", 9_000, 500)
    assert m.check({"E-A": 300, "E-B": -300}) == []  # long one bracket, short another: hedged
    assert m.skipped["hedged"] == 2
    book(p, "F-A", 100, 6_800, age_s=3_600)
    assert m.check({"F-A": -200}) == [] and m.skipped["stale_book"] == 1
    book(p, "F-A", 100, 6_800)  # NO bid 0.68 vs NO value 0.60
    [alert] = m.check({"F-A": -200})
    assert alert["side"] == "no" and alert["model_value"] == 0.6


async def test_signal_ids_are_the_same_for_the_same_book_and_new_after_a_feed_restart() -> None:
    got = []
    clock = [NOW]

    async def emit(s: object) -> None:
        got.append(s)

    p = SignalPipeline(emit, mode=Mode.SIM, risk=load_settings(min_edge=0.02).risk, clock=lambda: clock[0],
                       cooldown_s=0.0)
    await p.on_market(market_definition("F-A", ts_event=NOW, event_ticker="F", series_ticker="KXHIGHNY"))
    p.weather_p["F-A"] = ModelP(0.60, 0.9, "wx_ens", {}, NOW)

    update = partial(book_update, "F-A", ((3_000, 100),), ((6_500, 100),), series_ticker="KXHIGHNY", seq=7)

    first = await p.on_book(update(ts_event=NOW))
    replica = SignalPipeline(emit, mode=Mode.SIM, risk=load_settings(min_edge=0.02).risk, clock=lambda: NOW,
                             cooldown_s=0.0)
    await replica.on_market(p.markets["F-A"].defn)
    replica.weather_p = p.weather_p
    same = await replica.on_book(update(ts_event=NOW))
    assert first is not None and same is not None and first.id == same.id  # replicas dedupe
    p.last.clear()
    clock[0] = NOW + timedelta(minutes=3)
    restarted = await p.on_book(update(ts_event=NOW + timedelta(minutes=3)))  # feeds reconnected: seq 7 again
    assert restarted is not None and restarted.id != first.id
