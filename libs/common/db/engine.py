"""Async engine and session factory for PostgreSQL through psycopg 3."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Spellings we accept and rewrite to the psycopg 3 dialect; it is async under create_async_engine.
_PG_DRIVERS = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+psycopg_async"}


class DatabaseUrlError(ValueError):
    """The database URL is not a PostgreSQL URL kdesk can use."""


def normalise_url(url: str | URL) -> URL:
    """Parse `url` and point it at the psycopg 3 driver (`postgres://` and `postgresql://` included)."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise DatabaseUrlError("database URL is not parseable; expected postgresql://user:pass@host:port/db "
                               "(check KDESK_DATABASE_URL)") from e
    if parsed.drivername not in _PG_DRIVERS:
        raise DatabaseUrlError(f"kdesk needs PostgreSQL but the database URL uses {parsed.drivername!r} "
                               f"({redact(parsed)}); check KDESK_DATABASE_URL")
    if parsed.drivername != "postgresql+psycopg_async":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def redact(url: str | URL) -> str:
    """`url` as text with the password masked, safe for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def create_engine(url: str | URL, **kw: Any) -> AsyncEngine:
    """An `AsyncEngine` on `url` (normalised to psycopg 3) that checks connections before use."""
    kw.setdefault("pool_pre_ping", True)
    return create_async_engine(normalise_url(url), **kw)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine` that keep loaded attributes after commit (no implicit reload in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)
