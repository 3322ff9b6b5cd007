"""Configuration: defaults, profile presets with overrides, errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common.config import PROFILE_PRESETS, ConfigError, Mode, Profile, load_settings, usd_to_ticks


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("KDESK_", "KALSHI_")):
            monkeypatch.delenv(key)


def test_defaults_are_sim_and_balanced() -> None:
    s = load_settings()
    assert s.mode is Mode.SIM and s.profile is Profile.BALANCED
    assert s.risk.kelly_fraction == PROFILE_PRESETS[Profile.BALANCED]["kelly_fraction"]
    assert s.risk.max_event == 200 * 10_000


def test_profile_preset_with_one_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDESK_PROFILE", "conservative")
    monkeypatch.setenv("KDESK_MAX_EVENT_USD", "75.5")
    s = load_settings()
    assert s.risk.max_event == 755_000
    assert s.risk.kelly_fraction == 0.10  # untouched preset value
    assert s.risk.max_order == 10 * 10_000


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("KDESK_MODE", "production", "KDESK_MODE"),
        ("KDESK_PROFILE", "yolo", "KDESK_PROFILE"),
        ("KDESK_KELLY_FRACTION", "1.5", "KDESK_KELLY_FRACTION"),
        ("KDESK_MAX_EVENT_USD", "12.345678", "KDESK_MAX_EVENT_USD"),
        ("KDESK_NATS_URL", "http://x", "KDESK_NATS_URL"),
        ("KDESK_HEALTH_INTERVAL_S", "-1", "KDESK_HEALTH_INTERVAL_S"),
        ("KALSHI_DEMO_PRIVATE_KEY_PATH", "/nonexistent/key.pem", "KALSHI_DEMO_PRIVATE_KEY_PATH"),
    ],
)
def test_bad_values_fail_naming_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str,
                                             expected: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert expected in str(err.value)


def test_database_url_errors_do_not_echo_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDESK_DATABASE_URL", "mysql://u:hunter2@h/db")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "KDESK_DATABASE_URL" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_live_needs_allow_live_and_prod_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KDESK_MODE", "live")
    with pytest.raises(ConfigError, match="KDESK_ALLOW_LIVE"):
        load_settings()
    monkeypatch.setenv("KDESK_ALLOW_LIVE", "1")
    with pytest.raises(ConfigError, match="KALSHI_PROD_KEY_ID"):
        load_settings()
    key = tmp_path / "prod.pem"
    key.write_text("not really a key")
    monkeypatch.setenv("KALSHI_PROD_KEY_ID", "abc-123")
    monkeypatch.setenv("KALSHI_PROD_PRIVATE_KEY_PATH", str(key))
    s = load_settings()
    assert s.kalshi_env() == "prod"
    creds = s.kalshi_credentials("prod")
    assert creds is not None and creds.key_id.get_secret_value() == "abc-123"
    assert "abc-123" not in repr(creds)
    assert s.kalshi_credentials("demo") is None, "a prod key is never handed out for demo"


def test_a_key_id_without_its_key_file_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_DEMO_KEY_ID", "abc")
    with pytest.raises(ConfigError, match="KALSHI_DEMO_PRIVATE_KEY_PATH"):
        load_settings()


def test_usd_to_ticks_is_exact() -> None:
    assert usd_to_ticks("0.0001") == 1
    assert usd_to_ticks("200") == 2_000_000
    with pytest.raises(ValueError):
        usd_to_ticks("0.00001")
    with pytest.raises(ValueError):
        usd_to_ticks("-5")
