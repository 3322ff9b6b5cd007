"""Migrations against a real PostgreSQL: reach head, stay idempotent, survive concurrency, match the models."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, Column, Engine, MetaData, create_engine, inspect, pool
from sqlalchemy.engine import make_url

from libs.common.db import Base
from libs.common.db.migrate import (
    MIGRATION_LOCK_KEY,
    alembic_config,
    current_revision,
    head_revision,
    upgrade_to_head,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every table named in DESIGN §5, by owner. Written out on purpose: a table dropped from the models or the
# migration must fail here, not silently disappear.
DESIGN_TABLES = {
    # feeds
    "series", "events", "markets", "market_snapshots", "crypto_spot_bars",
    "weather_forecast_runs", "weather_ensemble_members", "weather_observations",
    # signals
    "signals", "weather_bracket_probs", "model_params",
    # executor
    "orders", "order_events", "fills", "positions", "balance_snapshots", "risk_reservations",
    # resolver
    "market_resolutions", "climate_reports", "prediction_accuracy",
    # notifier
    "alert_events", "command_audit", "notifier_outbox",
}


@pytest.fixture
def sync_engine(db_url: str) -> Iterator[Engine]:
    """A synchronous psycopg engine on the migrated test database (what Alembic's comparison needs)."""
    engine = create_engine(db_url, poolclass=pool.NullPool)
    yield engine
    engine.dispose()


def _diff(engine: Engine, metadata: MetaData) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, metadata))


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_reaches_head_and_is_idempotent(empty_db_url: str) -> None:
    assert current_revision(empty_db_url) is None

    upgrade_to_head(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()
    tables = _tables(empty_db_url)

    upgrade_to_head(empty_db_url)  # already at head: nothing happens, nothing fails
    assert current_revision(empty_db_url) == head_revision()
    assert _tables(empty_db_url) == tables


async def test_upgrade_works_while_an_event_loop_runs(empty_db_url: str) -> None:
    # Called from async code (a service's main, an async fixture): migrations move to their own thread.
    upgrade_to_head(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()


def test_threads_of_one_process_take_turns(empty_db_url: str) -> None:
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def migrate() -> None:
        start.wait()
        try:
            upgrade_to_head(empty_db_url)
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=migrate) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    assert errors == []
    assert current_revision(empty_db_url) == head_revision()


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _advisory_waiters(conn: psycopg.Connection) -> int:
    high, low = MIGRATION_LOCK_KEY >> 32, MIGRATION_LOCK_KEY & 0xFFFFFFFF
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = %s AND l.objid = %s"
        " AND d.datname = current_database()", (high, low)).fetchone()
    return int(row[0]) if row else 0


def test_processes_serialise_on_the_advisory_lock(empty_db_url: str) -> None:
    # Hold the migration lock, start two migrating processes, and release only once both wait on it:
    # they then run strictly one after the other, and the second finds the database at head.
    script = "import sys; from libs.common.db.migrate import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    with psycopg.connect(_libpq(empty_db_url)) as holder, psycopg.connect(_libpq(empty_db_url),
                                                                         autocommit=True) as probe:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        procs = [subprocess.Popen([sys.executable, "-c", script, empty_db_url], cwd=REPO_ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
        try:
            deadline = time.monotonic() + 60
            while _advisory_waiters(probe) < 2:
                finished = [p for p in procs if p.poll() is not None]
                assert not finished, "a migrating process exited without waiting for the migration lock: " \
                    + finished[0].communicate()[0].decode(errors="replace")
                assert time.monotonic() < deadline, "migrating processes never waited on the migration lock"
                time.sleep(0.05)
            assert current_revision(empty_db_url) is None
            holder.rollback()  # releases the transaction-scoped lock
            outputs = [p.communicate(timeout=60)[0].decode(errors="replace") for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    assert current_revision(empty_db_url) == head_revision()
    assert DESIGN_TABLES <= _tables(empty_db_url)


def test_downgrade_to_base_then_upgrade_again(empty_db_url: str) -> None:
    upgrade_to_head(empty_db_url)
    command.downgrade(alembic_config(empty_db_url), "base")
    assert current_revision(empty_db_url) is None
    assert _tables(empty_db_url) <= {"alembic_version"}
    upgrade_to_head(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()


def test_every_design_table_exists(db_url: str) -> None:
    tables = _tables(db_url)
    assert DESIGN_TABLES - tables == set()
    assert DESIGN_TABLES <= set(Base.metadata.tables)


def test_models_and_migrations_do_not_drift(sync_engine: Engine) -> None:
    # Fails when a model changes without a migration (or the reverse): write the next revision with
    #   KDESK_DATABASE_URL=... alembic -c libs/common/db/alembic.ini revision --autogenerate --rev-id NNNN -m ...
    diff = _diff(sync_engine, Base.metadata)
    assert diff == [], "models and migrations differ:\n" + "\n".join(map(repr, diff))


def test_drift_check_notices_an_unmigrated_column(sync_engine: Engine) -> None:
    # Guards the guard: the comparison above must see a column that exists only in the models.
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["orders"].append_column(Column("unmigrated_ticks", BigInteger, nullable=True))

    diff = _diff(sync_engine, metadata)
    assert [(d[0], d[2], d[3].name) for d in diff if isinstance(d, tuple)] == [
        ("add_column", "orders", "unmigrated_ticks")]
