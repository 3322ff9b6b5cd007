"""Database URL handling: every PostgreSQL spelling reaches psycopg 3; passwords never reach text."""

from __future__ import annotations

import pytest

from libs.common.db.engine import DatabaseUrlError, create_engine, normalise_url, redact, session_factory


@pytest.mark.parametrize("url", [
    "postgres://u:secret@db:5432/kdesk",
    "postgresql://u:secret@db:5432/kdesk",
    "postgresql+psycopg2://u:secret@db:5432/kdesk",
    "postgresql+psycopg://u:secret@db:5432/kdesk",
])
def test_postgres_urls_are_normalised_to_psycopg(url: str) -> None:
    parsed = normalise_url(url)
    assert parsed.drivername == "postgresql+psycopg"
    assert (parsed.host, parsed.port, parsed.database, parsed.password) == ("db", 5432, "kdesk", "secret")


def test_other_databases_are_refused_without_leaking_the_password() -> None:
    with pytest.raises(DatabaseUrlError, match="KDESK_DATABASE_URL") as err:
        normalise_url("mysql://u:secret@db/kdesk")
    assert "secret" not in str(err.value)


def test_redact_masks_the_password() -> None:
    assert "secret" not in redact("postgresql://u:secret@db/kdesk")
    assert redact("not a url") == "<unparseable database URL>"


async def test_engine_and_sessions_are_configured_without_connecting() -> None:
    engine = create_engine("postgres://u:secret@127.0.0.1:1/kdesk")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.dialect.is_async
        assert engine.pool._pre_ping  # type: ignore[attr-defined]
        assert "secret" not in repr(engine)
        factory = session_factory(engine)
        assert factory.kw["expire_on_commit"] is False
    finally:
        await engine.dispose()
