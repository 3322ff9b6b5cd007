"""What each panel shows: the services' integers as dollars and contracts, grouped as the CLI groups them."""

from __future__ import annotations

from services.dashboard import panels
from tests.unit.dashboard.desk import EVENT, NOW, answers, beat


def test_positions_are_grouped_by_event_with_the_executor_s_marks_and_a_total() -> None:
    p = panels.positions(answers()["positions"])
    assert p is not None
    assert [e["event"] for e in p["events"]] == ["KXHIGHCHI-26NOV23", EVENT]
    ny = p["events"][1]["rows"]
    assert [r["market"] for r in ny] == ["B52.5", "B54.5"]
    yes, no = ny
    assert (yes["side"], yes["contracts"], yes["cost"], yes["mark"], yes["unrealized"]) == \
        ("YES", "5", "$2.10", "45.00¢", "+0.15")
    assert (no["side"], no["contracts"], no["mark"], no["unrealized"]) == ("NO", "2.50", "—", "—")
    # The total adds what the executor said (no mark: nothing to add), as `kdesk positions` does.
    assert p["total"] == {"cost": "$7.88", "cost_ticks": 78_750, "unrealized": "+0.19", "unrealized_ticks": 1_900,
                          "realized": "-0.01", "realized_ticks": -70}
    assert panels.positions(None) is None
    assert panels.positions([])["count"] == 0  # type: ignore[index]


def test_pnl_is_the_executor_s_answer_in_dollars_newest_day_first() -> None:
    p = panels.pnl(answers()["pnl"])
    assert p is not None
    assert (p["today"], p["realized"], p["fees"]) == ({"text": "-1.23", "ticks": -12_345},
                                                      {"text": "+0.33", "ticks": 3_300},
                                                      {"text": "$0.02", "ticks": 210})
    assert [d["date"] for d in p["days"]] == ["2026-11-22", "2026-11-21"]
    assert p["days"][1]["pnl"]["text"] == "+1.00" and p["days"][1]["start"] == "$999.00"
    assert [f["family"] for f in p["families"]] == ["btc", "weather"]
    assert p["families"][1]["unrealized"] == {"text": "+0.15", "ticks": 1_500}


def test_banner_says_trading_paused_or_blocked_and_is_loud_when_live() -> None:
    status = answers()["status"]
    b = panels.banner("sim", status, None, answers()["control"])
    assert (b["state"], b["trading"], b["label"], b["bankroll"], b["today"]) == \
        ("on", "trading", "SIM", "$1,001.50", "-1.23")
    paused = panels.banner("sim", {**status, "paused": True, "pause_reason": "lunch"}, None, None)
    assert (paused["state"], paused["trading"]) == ("paused", "PAUSED: lunch")
    blocked = panels.banner("sim", {**status, "blocked": "mode_changed"}, None,
                            {"control_mode": "paper", "live_armed": False})
    assert blocked["state"] == "blocked" and "control mode is PAPER" in blocked["mode_note"]
    down = panels.banner("live", None, "unavailable: no executor", None)
    assert down["state"] == "unknown" and "no executor" in down["trading"] and down["live"] and down["label"] == "LIVE"
    armed = panels.banner("live", status, None, {"control_mode": "live", "live_armed": True,
                                                 "live_armed_until": "2026-11-23T04:00:00+00:00"})
    assert armed["live_armed"] == "LIVE armed until 2026-11-23 04:00 UTC"


def test_orders_and_fills_read_in_cents_and_contracts() -> None:
    a = answers()
    [o] = panels.orders(a["orders"], NOW)  # type: ignore[misc]
    assert (o["side"], o["price"], o["filled"], o["age"]) == ("YES", "31.00¢", "2/10", "42 s")
    first, second = panels.fills(a["fills"])  # type: ignore[misc]
    assert (first["price"], first["contracts"], first["fee"], first["liquidity"]) == ("42.00¢", "5", "$0.01", "maker")
    assert (second["side"], second["price"], second["liquidity"]) == ("NO", "31.00¢", "taker"), "NO at $1 - YES"
    assert first["time"] == "11-22 19:57:00"


def test_signals_say_what_became_of_each() -> None:
    declined, sent = panels.signals(answers()["signals"])  # type: ignore[misc]
    assert (declined["what"], declined["kind"], declined["side"]) == ("declined: cap_event", "declined", "NO")
    assert (sent["what"], sent["kind"], sent["edge"]) == ("resting", "sent", "8.20¢")
    assert panels.what_happened(None, None) == ("not decided yet", "none")
    assert panels.what_happened(None, "stale_book") == ("no order (stale_book)", "none")


def test_health_judges_each_instance_as_kdesk_health_does() -> None:
    h = panels.health([beat("executor"), beat("feeds", stale=True)], ["resolver"], answers()["ws"], NOW)
    ex, feeds = h["rows"]
    assert ex["healthy"] and ex["state"] == "healthy" and ex["beat"] == "1 s"
    assert not feeds["healthy"] and feeds["state"] == "degraded" and feeds["inputs"][0]["stale"]
    assert h["silent"] == ["resolver"] and (h["healthy"], h["total"]) == (1, 3)
    kalshi, kraken = h["connections"]
    assert kalshi["ok"] and kalshi["messages"] == "12,345" and not kraken["ok"] and kraken["last"] == "never"


def test_free_text_is_redacted() -> None:
    hb = beat("executor", stale=True, detail="db postgresql://kdesk:hunter2@db/kdesk down")
    [row] = panels.health([hb], [], None, NOW)["rows"]
    assert "hunter2" not in row["detail"] and "***" in row["detail"]


def test_accuracy_rows() -> None:
    acc = panels.accuracy(answers()["accuracy"])
    assert acc is not None
    [w] = acc["families"]
    assert (w["family"], w["n"], w["brier"], w["skill"], w["hit"], w["pnl"]) == \
        ("weather", 12, "0.1800", "+0.100", "60%", "+0.12")


def test_the_llm_panel_shows_the_days_spend_and_each_call_with_its_prompt_and_answer() -> None:
    import jinja2

    from services.dashboard.app import templates

    data = {"day": "2026-11-22", "model": "grok-4", "budget_ticks": 50_000, "spent_ticks": 123,
            "remaining_ticks": 49_877, "budget_spent": False, "calls_today": {"done": 5, "failed": 1},
            "provider_backoff_s": 0, "calibration": {"n": 0},
            "recent_calls": [{"ts": "2026-11-22T20:00:01+00:00", "ticker": "KXSIMQ-26NOV23-Q1", "stage": "trader",
                              "model": "grok-4", "status": "done", "error": None, "cost_ticks": 13,
                              "parsed": {"probability": 0.81}, "latency_ms": 412.0, "prompt_tokens": 250,
                              "completion_tokens": 36, "prompt": "[user]\nMarket: KXSIMQ-26NOV23-Q1 <b>",
                              "response": '{"probability": 0.81}'},
                             {"ts": "2026-11-22T19:59:00+00:00", "ticker": "KXSIMQ-26NOV23-Q2", "stage": "forecaster",
                              "model": "grok-4", "status": "failed", "error": "refusal", "cost_ticks": 4,
                              "parsed": None, "latency_ms": 90.0, "prompt_tokens": 170, "completion_tokens": 9,
                              "prompt": "p", "response": "I can't help"}]}
    p = panels.llm(data)
    assert p is not None and (p["spent"], p["budget"], p["left"]) == ("$0.0123", "$5.0000", "$4.9877")
    first, second = p["recent"]
    assert (first["time"], first["p"], first["cost"], first["tokens"], first["latency"]) == \
        ("20:00:01", "0.81", "$0.0013", "250 / 36", "412 ms")
    assert (second["status"], second["error"], second["p"]) == ("failed", "refusal", "—")
    env: jinja2.Environment = templates()
    html = env.get_template("panels/llm.html").render(llm=p, error=None)
    assert "$0.0123" in html and "1 failed" in html and "refusal" in html
    assert "&lt;b&gt;" in html  # a prompt is text, never markup
    assert panels.llm(None) is None
    off = env.get_template("panels/llm.html").render(llm=None, error="no_responders")
    assert "off unless KDESK_LLM_SERIES" in off
