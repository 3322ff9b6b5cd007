"""Programmatic Alembic: bring a database to the newest schema, or ask where it stands.

No alembic.ini is needed: the configuration is built here with `script_location` resolved from this
package, so it works from a checkout, an installed wheel, `kdesk migrate` and pytest fixtures alike.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import pool

from libs.common.db.engine import normalise_url, redact
from libs.common.logs import get_logger

log = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Key of the PostgreSQL advisory lock every migrating process takes (see migrations/env.py). Any fixed
# 64-bit number works; it only has to be the same for all processes migrating the same database.
MIGRATION_LOCK_KEY = 0x6B6465736B5F6D67  # "kdesk_mg"

# Alembic keeps the running migration environment in module globals (`alembic.context`, `alembic.op`),
# so two migrations in one process must not overlap; across processes the advisory lock serialises them.
_in_process = threading.Lock()


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic `Config` for our migrations; `database_url` travels as an attribute, never logged."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        # Kept out of the main options, whose ConfigParser interpolation would trip on '%' in passwords.
        cfg.attributes["database_url"] = database_url
    return cfg


def head_revision() -> str:
    """The newest revision id in the migration scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError(f"no migration scripts found under {MIGRATIONS_DIR}")
    return head


def current_revision(database_url: str) -> str | None:
    """The revision the database at `database_url` is at, or None when it was never migrated."""
    # The psycopg dialect is synchronous under a plain engine, so this needs no event loop.
    engine = create_sync_engine(normalise_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _upgrade(database_url: str) -> None:
    with _in_process:
        command.upgrade(alembic_config(database_url), "head")


def upgrade_to_head(database_url: str) -> None:
    """Apply every pending migration; a no-op at head, and safe to run from several processes at once.

    Migrations run on an async engine inside `asyncio.run`; when the caller's thread already runs an
    event loop (an async test or service), the work moves to a short-lived thread of its own. Calls from
    several threads of one process take turns.
    """
    head = head_revision()
    log.info("db.migrate.start", url=redact(database_url), target=head)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _upgrade(database_url)
    else:
        failure: list[BaseException] = []

        def run() -> None:
            try:
                _upgrade(database_url)
            except BaseException as e:  # re-raised in the caller's thread below
                failure.append(e)

        worker = threading.Thread(target=run, name="kdesk-migrate")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
    log.info("db.migrate.done", url=redact(database_url), revision=head)
