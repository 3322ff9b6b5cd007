"""Pure parts of the notifier: command parsing, alert batching, rendering."""

from __future__ import annotations

from datetime import UTC, datetime

from libs.common.config import Mode
from libs.common.db import OutboxMessage
from libs.common.events import Alert, Heartbeat, InputFreshness
from services.notifier import render
from services.notifier.bot import COMMANDS, parse
from services.notifier.sender import MAX_TEXT, batch


def test_parse_reads_the_command_word_without_the_bot_mention() -> None:
    assert parse("/Pause@kdesk_bot too fast") == ("pause", ["too", "fast"])
    assert parse("  /status ") == ("status", [])
    assert parse("CONFIRM LIVE") == ("", ["CONFIRM", "LIVE"])
    assert parse("") == ("", [])


def test_commands_are_valid_telegram_bot_commands() -> None:
    import re

    for c in COMMANDS:
        assert re.fullmatch(r"[a-z0-9_]{1,32}", c.name) and 1 <= len(c.help) <= 256
    steer = {c.name for c in COMMANDS if c.operator}
    assert steer == {"pause", "resume", "flatten", "family", "mode", "llmbudget"}


def _row(i: int, chat: int, kind: str = "alert", body: str = "x", **kw: object) -> OutboxMessage:
    return OutboxMessage(id=i, mode="sim", chat_id=chat, kind=kind, body=body, **kw)


def test_batch_joins_one_chats_alerts_and_keeps_that_chats_order() -> None:
    rows = [_row(1, 10), _row(2, 20), _row(3, 10), _row(4, 10, kind="reply"), _row(5, 10)]
    assert [r.id for r in batch(rows)] == [1, 3], "stops at the reply, skips the other chat"
    assert [r.id for r in batch(rows[1:])] == [2]
    assert [r.id for r in batch([_row(1, 10, kind="reply"), _row(2, 10)])] == [1]


def test_batch_respects_telegrams_length_limit() -> None:
    big = "y" * (MAX_TEXT // 3)
    rows = [_row(i, 10, body=big) for i in range(1, 6)]
    got = batch(rows)
    assert len(got) == 2 and sum(len(r.body or "") for r in got) + 2 <= MAX_TEXT


def test_every_message_names_the_mode_and_escapes_html() -> None:
    a = Alert(ts_event=datetime(2026, 12, 2, 12, 0, tzinfo=UTC), mode=Mode.LIVE, family="risk", severity="critical",
              dedupe_key="k", title="loss <limit> & more", detail="a<b")
    text = render.alert(a)
    assert "[LIVE]" in text and "&lt;limit&gt; &amp; more" in text and "a&lt;b" in text
    assert render.balance("paper", {"balance_ticks": 12_345_678}).startswith("<b>[PAPER]</b> balance $1,234.57")


def test_status_shows_stale_inputs_and_silent_services() -> None:
    now = datetime.now(UTC)
    hb = Heartbeat(ts_event=now, mode=Mode.SIM, service="feeds", instance="a", status="degraded", started_at=now,
                   inputs={"weather": InputFreshness(age_s=2520.0, max_age_s=600, stale=True)})
    text = render.status("sim", {"paused": True, "pause_reason": "lunch", "open_orders": 3, "orders_sent": 9},
                         {"today_pnl_ticks": -12_500, "realized_ticks": 0, "unrealized_ticks": -12_500},
                         [hb], ["signals"], {})
    assert "PAUSED</b> lunch" in text and "open orders: 3" in text
    assert "weather 42 min old" in text and "signals" in text and "SILENT" in text
    assert "-1.25" in text


def test_status_names_a_kalshi_contract_mismatch() -> None:
    ex = {"paused": True, "pause_reason": "contract", "open_orders": 0, "orders_sent": 0,
          "contract": {"ok": False, "problems": ["series.fee_type: missing"]}}
    assert "contract mismatch</b>: series.fee_type: missing" in render.status("sim", ex, None, [], [], {})
    assert "contract" not in render.status("sim", ex | {"paused": False, "contract": {"ok": True}}, None, [], [], {})
