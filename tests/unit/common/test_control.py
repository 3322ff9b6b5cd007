"""The live-arming rules every operator surface shares (Telegram's `/mode live`, `kdesk mode live`)."""

from __future__ import annotations

from libs.common.control import CONFIRM_LIVE, CONFIRM_WINDOW_S, confirmation, live_refusal


def test_live_needs_an_executor_that_answers_and_allows_it() -> None:
    assert live_refusal(None) == "executor_not_answering"
    assert live_refusal({"allow_live": False}) == "live_not_allowed"
    assert live_refusal({}) == "live_not_allowed"
    assert live_refusal({"allow_live": True}) is None


def test_only_the_exact_phrase_within_the_window_confirms() -> None:
    assert confirmation(CONFIRM_LIVE, 1.0) == "ok"
    assert confirmation(f"  {CONFIRM_LIVE}\n", CONFIRM_WINDOW_S) == "ok"
    assert confirmation("confirm live", 1.0) == "wrong"
    assert confirmation("", 1.0) == confirmation(None, 1.0) == "wrong"
    assert confirmation(CONFIRM_LIVE, CONFIRM_WINDOW_S + 0.1) == "late"
    assert confirmation("yes", CONFIRM_WINDOW_S + 5) == "wrong"  # a wrong answer is wrong, late or not
