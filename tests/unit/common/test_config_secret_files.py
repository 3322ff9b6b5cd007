"""Secrets from files (`<VARIABLE>_FILE`, compose secrets): read, stripped, exclusive with the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KDESK_TELEGRAM_BOT_TOKEN", "KDESK_TELEGRAM_BOT_TOKEN_FILE", "KALSHI_DEMO_KEY_ID",
                "KALSHI_DEMO_KEY_ID_FILE", "KALSHI_DEMO_PRIVATE_KEY_PATH", "KDESK_MODE"):
        monkeypatch.delenv(var, raising=False)


def test_token_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's content, without the trailing newline an editor adds."""
    (tmp_path / "tok").write_text("123456:secret-token\n")
    monkeypatch.setenv("KDESK_TELEGRAM_BOT_TOKEN_FILE", str(tmp_path / "tok"))
    s = load_settings()
    assert s.telegram_bot_token is not None and s.telegram_bot_token.get_secret_value() == "123456:secret-token"


def test_kalshi_key_id_from_file_satisfies_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Demo mode with KALSHI_DEMO_KEY_ID_FILE and the key's path: the pair is complete."""
    (tmp_path / "kid").write_text("abc-123")
    (tmp_path / "key.pem").write_text("pem")
    monkeypatch.setenv("KDESK_MODE", "demo")
    monkeypatch.setenv("KALSHI_DEMO_KEY_ID_FILE", str(tmp_path / "kid"))
    monkeypatch.setenv("KALSHI_DEMO_PRIVATE_KEY_PATH", str(tmp_path / "key.pem"))
    creds = load_settings().kalshi_credentials("demo")
    assert creds is not None and creds.key_id.get_secret_value() == "abc-123"


def test_empty_file_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty secret file means no secret (the notifier then runs without Telegram)."""
    (tmp_path / "tok").write_text("\n")
    monkeypatch.setenv("KDESK_TELEGRAM_BOT_TOKEN_FILE", str(tmp_path / "tok"))
    assert load_settings().telegram_bot_token is None


def test_missing_file_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path that cannot be read fails at start, naming the variable, never a value."""
    monkeypatch.setenv("KDESK_TELEGRAM_BOT_TOKEN_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="KDESK_TELEGRAM_BOT_TOKEN_FILE"):
        load_settings()


def test_both_the_variable_and_its_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sources for one secret is ambiguous: refused."""
    (tmp_path / "tok").write_text("123456:a")
    monkeypatch.setenv("KDESK_TELEGRAM_BOT_TOKEN_FILE", str(tmp_path / "tok"))
    monkeypatch.setenv("KDESK_TELEGRAM_BOT_TOKEN", "123456:b")
    with pytest.raises(ConfigError, match="not both"):
        load_settings()
