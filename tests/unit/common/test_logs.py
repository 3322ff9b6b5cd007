"""Secrets never reach log lines."""

from __future__ import annotations

from libs.common.logs import _redact, redact_text


def test_url_passwords_and_bot_tokens_are_redacted() -> None:
    assert redact_text("postgresql+psycopg://desk:s3cret@db:5432/kdesk") == "postgresql+psycopg://desk:***@db:5432/kdesk"
    assert "AAH" not in redact_text("token 123456789:AAHfakefakefakefakefakefake_x is bad")


def test_secret_named_fields_are_masked() -> None:
    out = _redact(None, "info", {"event": "x", "signature": "abc", "api_key": "k", "ticker": "KXHIGHNY"})
    assert out == {"event": "x", "signature": "***", "api_key": "***", "ticker": "KXHIGHNY"}


def test_llm_token_counts_are_logged_but_a_string_in_such_a_field_is_not() -> None:
    from libs.common.logs import _redact

    out = _redact(None, "info", {"prompt_tokens": 173, "completion_tokens": 55, "api_token": 5,
                                 "reasoning_tokens": "xai-abc"})
    assert out == {"prompt_tokens": 173, "completion_tokens": 55, "api_token": "***", "reasoning_tokens": "***"}
