"""Who may look and who may steer: the binding rule, tokens, and signed session cookies."""

from __future__ import annotations

import pytest

from libs.common.config import ConfigError, load_settings
from services.dashboard.access import SESSION_S, Access, check_binding, is_loopback

VIEW = "viewer-token-0123456789"
OPER = "operator-token-0123456789"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "dashboard.example", ""])
def test_anything_else_is_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_beyond_loopback_without_a_token_is_refused_naming_the_variables() -> None:
    with pytest.raises(ConfigError) as e:
        check_binding("0.0.0.0", None)
    assert "KDESK_DASHBOARD_TOKEN is not set" in str(e.value) and "KDESK_DASHBOARD_HOST=0.0.0.0" in str(e.value)
    check_binding("0.0.0.0", VIEW)  # with a token: fine
    check_binding("127.0.0.1", None)  # loopback: fine


def test_settings_defaults_are_loopback_and_no_tokens() -> None:
    s = load_settings()
    assert (s.dashboard_host, s.dashboard_port) == ("127.0.0.1", 8765)
    a = Access.from_settings(s)
    assert not a.login_required and not a.controls and a.role(cookie=None, authorization=None) == "viewer"


def test_tokens_must_be_long_and_different() -> None:
    with pytest.raises(ConfigError, match="KDESK_DASHBOARD_TOKEN: must be at least 16 characters"):
        load_settings(dashboard_token="short")
    with pytest.raises(ConfigError, match="must differ"):
        load_settings(dashboard_token=VIEW, dashboard_operator_token=VIEW)
    with pytest.raises(ConfigError) as e:
        load_settings(dashboard_operator_token="tiny")
    assert "tiny" not in str(e.value), "a secret's value is never echoed"


def test_tokens_grant_their_role_only() -> None:
    a = Access(VIEW, OPER)
    assert a.role_for_token(VIEW) == "viewer" and a.role_for_token(OPER) == "operator"
    assert a.role_for_token(VIEW + "x") is None and a.role_for_token("") is None
    assert a.role(cookie=None, authorization=None) is None, "a login token is set: nobody is a viewer for free"
    assert a.role(cookie=None, authorization=f"Bearer {OPER}") == "operator"
    assert a.role(cookie=None, authorization="Bearer wrong") is None


def test_cookies_are_signed_by_the_role_s_token_and_expire() -> None:
    now = [1_000_000.0]
    a = Access(VIEW, OPER, clock=lambda: now[0])
    viewer, operator = a.cookie_for("viewer"), a.cookie_for("operator")
    assert a.role_for_cookie(viewer) == "viewer" and a.role_for_cookie(operator) == "operator"
    assert VIEW not in viewer and OPER not in operator, "the cookie holds a MAC, not the token"
    assert a.role_for_cookie(viewer.replace("viewer", "operator", 1)) is None, "a viewer cannot promote itself"
    assert a.role_for_cookie(viewer[:-1] + ("0" if viewer[-1] != "0" else "1")) is None
    assert a.role_for_cookie("garbage") is None and a.role_for_cookie("") is None
    # Another token (rotated) ends every session made with the old one.
    assert Access("another-token-0123456789", OPER, clock=lambda: now[0]).role_for_cookie(viewer) is None
    now[0] += SESSION_S + 1
    assert a.role_for_cookie(viewer) is None, "sessions expire"


def test_without_a_login_token_anyone_here_looks_but_only_the_operator_token_steers() -> None:
    a = Access(None, OPER)
    assert a.role(cookie=None, authorization=None) == "viewer"
    assert a.role(cookie=a.cookie_for("operator"), authorization=None) == "operator"
    with pytest.raises(ValueError):
        a.cookie_for("viewer")
