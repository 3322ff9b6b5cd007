"""Alembic environment: runs migrations on an async psycopg engine under a PostgreSQL advisory lock.

The database URL comes from `config.attributes["database_url"]` (set by `libs.common.db.migrate`), else
the `sqlalchemy.url` option, else `KDESK_DATABASE_URL` (for `alembic -c libs/common/db/alembic.ini ...`).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from libs.common.db.engine import normalise_url
from libs.common.db.migrate import MIGRATION_LOCK_KEY
from libs.common.db.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> URL:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url") \
        or os.environ.get("KDESK_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL for migrations: pass one to upgrade_to_head() or set KDESK_DATABASE_URL")
    return normalise_url(url)


def _configure(**kw: object) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, compare_server_default=True, **kw)


def run_migrations_offline() -> None:
    """Emit the migration SQL as text (`alembic upgrade head --sql`) instead of running it."""
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run pending migrations in one transaction that first takes the migration advisory lock."""
    _configure(connection=connection)
    with context.begin_transaction():
        # A second process blocks here until the first commits, then finds the database at head.
        # Transaction-scoped, so the lock can never leak past this transaction.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_async_migrations() -> None:
    """Open one connection on a pool-less async engine and migrate through it."""
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Migrate the live database (`libs.common.db.migrate` guarantees no event loop runs in this thread)."""
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
