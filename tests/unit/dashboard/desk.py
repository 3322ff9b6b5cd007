"""A desk as the dashboard's sources would report it: the services' answers in their real shapes.

`StaticDesk` stands where `services.dashboard.sources.Sources` stands (the page's `DeskView` seam), so the
views and the login rules are tested without a running desk; the control path is tested against a real NATS
server and a real PostgreSQL (test_controls.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from libs.common.config import Mode
from libs.common.events import Alert, Heartbeat, InputFreshness
from services.dashboard.sources import Answer

NOW = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
EVENT = "KXHIGHNY-26NOV23"


def answers() -> dict[str, Any]:
    """One answer per source, as the services send them (integer money)."""
    equity = [{"ts": (NOW - timedelta(hours=6 - i)).isoformat(), "equity_ticks": 10_000_000 + i * 2_500}
              for i in range(7)]
    return {
        "status": {"mode": "sim", "instance": "ex1", "allow_live": False, "paused": False, "pause_reason": None,
                   "blocked": None, "bankroll_ticks": 10_015_000, "today_pnl_ticks": -12_345, "open_orders": 1,
                   "orders_sent": 7, "waiting_for_fresh_data": False},
        "pnl": {"window_days": 7, "since": "2026-11-16T00:00:00+00:00", "now": NOW.isoformat(),
                "as_of": NOW.isoformat(), "equity": equity,
                "days": [{"date": "2026-11-21", "start_equity_ticks": 9_990_000, "end_equity_ticks": 10_000_000,
                          "pnl_ticks": 10_000, "realized_ticks": 4_000, "fees_ticks": 140, "fills": 3},
                         {"date": "2026-11-22", "start_equity_ticks": 10_000_000, "end_equity_ticks": 9_987_655,
                          "pnl_ticks": -12_345, "realized_ticks": -700, "fees_ticks": 70, "fills": 1}],
                "today_pnl_ticks": -12_345, "realized_ticks": 3_300, "unrealized_ticks": 1_500, "fees_ticks": 210,
                "by_family": {"btc": {"realized_ticks": -700, "unrealized_ticks": 0, "fees_ticks": 70,
                                      "positions": 0},
                              "weather": {"realized_ticks": 4_000, "unrealized_ticks": 1_500, "fees_ticks": 140,
                                          "positions": 2}}},
        "positions": [
            {"ticker": f"{EVENT}-B52.5", "event_ticker": EVENT, "family": "weather", "position": 500,
             "cost_ticks": 21_000, "realized_pnl_ticks": -70, "fees_paid_ticks": 70, "mark_ticks": 4_500,
             "unrealized_pnl_ticks": 1_500},
            {"ticker": f"{EVENT}-B54.5", "event_ticker": EVENT, "family": "weather", "position": -250,
             "cost_ticks": 7_750, "realized_pnl_ticks": 0, "fees_paid_ticks": 35, "mark_ticks": None,
             "unrealized_pnl_ticks": None},
            {"ticker": "KXHIGHCHI-26NOV23-T40", "event_ticker": "KXHIGHCHI-26NOV23", "family": "weather",
             "position": 1_050, "cost_ticks": 50_000, "realized_pnl_ticks": 0, "fees_paid_ticks": 0,
             "mark_ticks": 4_800, "unrealized_pnl_ticks": 400}],
        "orders": [{"client_order_id": "kd-1", "order_id": "o1", "ticker": f"{EVENT}-B56.5", "book_side": "bid",
                    "outcome_side": "yes", "yes_price": 3_100, "initial_count": 1_000, "fill_count": 200,
                    "remaining_count": 800, "fees_ticks": 0, "status": "resting", "reason": None,
                    "post_only": True, "signal_id": "s1", "created_at": (NOW - timedelta(seconds=42)).isoformat()}],
        "fills": [{"fill_id": "t9:o1", "order_id": "o1", "ticker": f"{EVENT}-B52.5", "outcome_side": "yes",
                   "yes_price": 4_200, "count": 500, "fee_ticks": 70, "is_taker": False,
                   "filled_at": (NOW - timedelta(minutes=3)).isoformat()},
                  {"fill_id": "t8:o2", "order_id": "o2", "ticker": f"{EVENT}-B54.5", "outcome_side": "no",
                   "yes_price": 6_900, "count": 250, "fee_ticks": 35, "is_taker": True,
                   "filled_at": (NOW - timedelta(minutes=9)).isoformat()}],
        "signals": [{"signal_id": "s2", "ts": NOW.isoformat(), "family": "weather", "ticker": f"{EVENT}-B58.5",
                     "action": "buy_no", "model_prob": 0.12, "market_prob": 0.2, "edge_maker_ticks": 450,
                     "order_status": "blocked", "reason": "cap_event"},
                    {"signal_id": "s1", "ts": NOW.isoformat(), "family": "weather", "ticker": f"{EVENT}-B56.5",
                     "action": "buy_yes", "model_prob": 0.41, "market_prob": 0.31, "edge_maker_ticks": 820,
                     "order_status": "resting", "reason": None}],
        "accuracy": {"mode": "sim", "days": 30, "families": {"weather": {
            "n": 12, "brier": 0.18, "brier_market": 0.2, "brier_skill": 0.1, "log_loss": 0.52, "hit_rate": 0.6,
            "pnl_ticks": 1_234, "bins": [{"lo": i / 10, "hi": (i + 1) / 10, "count": 2 if i % 3 == 0 else 0,
                                          "mean_p": i / 10 + 0.05 if i % 3 == 0 else None,
                                          "observed": 0.5 if i % 3 == 0 else None} for i in range(10)]}}},
        "ws": {"instance": "feeds1", "connections": [
            {"name": "kalshi", "kind": "ws", "url": "ws://127.0.0.1:1/trade-api/ws/v2", "state": "connected",
             "last_message_age_s": 0.4, "reconnects": 0, "failures_in_a_row": 0, "messages": 12_345},
            {"name": "kraken", "kind": "ws", "url": "ws://127.0.0.1:2/", "state": "reconnecting",
             "last_message_age_s": None, "reconnects": 3, "failures_in_a_row": 2, "messages": 0}]},
        "control": {"control_mode": None, "live_armed_until": None, "live_armed": False},
    }


def beat(service: str, *, stale: bool = False, at: datetime = NOW, detail: str = "") -> Heartbeat:
    """A heartbeat of `service`/1 with one input (stale or fresh)."""
    inputs = {"kalshi_ws" if service == "feeds" else "executor": InputFreshness(
        age_s=99.0 if stale else 0.5, max_age_s=30.0, stale=stale)}
    return Heartbeat(ts_event=at - timedelta(seconds=1), mode=Mode.SIM, service=service, instance="1",
                     status="degraded" if stale else "ok", started_at=at - timedelta(hours=1), inputs=inputs,
                     detail=detail)


class StaticDesk:
    """A `DeskView` answering from fixed data (change `values` / `errors` to change the desk)."""

    def __init__(self, mode: str = "sim", values: dict[str, Any] | None = None) -> None:
        self.mode = mode
        self.values = answers() if values is None else values
        self.errors: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.beats = [beat("executor"), beat("feeds", stale=True), beat("signals")]
        self.silent = ["resolver"]
        self.alerts: list[Alert] = []
        self.asked = 0

    def bump(self, name: str) -> None:
        """Say that `name` has a new answer (as a refreshed source would)."""
        self.versions[name] = self.versions.get(name, 1) + 1

    async def answers(self) -> dict[str, Answer]:
        self.asked += 1
        return {k: Answer(self.values.get(k), self.errors.get(k), 1.0, self.versions.get(k, 1), 1.0)
                for k in set(self.values) | set(self.errors)}

    def live_beats(self) -> tuple[list[Heartbeat], list[str]]:
        return self.beats, self.silent

    def last_alerts(self) -> list[Alert]:
        return list(reversed(self.alerts))
