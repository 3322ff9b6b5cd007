"""What the benchmarks need: a private, provisioned nats-server; a private, migrated PostgreSQL."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from libs.common.bus import Bus
from libs.common.db.migrate import upgrade_to_head
from libs.common.embedded import EmbeddedNats, EmbeddedPostgres


@asynccontextmanager
async def private_nats() -> AsyncIterator[str]:
    """Start a nats-server of our own (never the system one), provision the desk's streams, yield its URL."""
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "nats").start()
        try:
            prov = await Bus.connect(server.url, service="bench")
            await prov.provision()
            await prov.close()
            yield server.url
        finally:
            server.stop()


@contextmanager
def private_postgres() -> Iterator[str]:
    """Start a PostgreSQL of our own (fast, unsafe: benchmark data is thrown away), migrate it, yield its URL."""
    with tempfile.TemporaryDirectory() as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", fast_unsafe=True).start()
        try:
            url = pg.url("postgres")
            upgrade_to_head(url)
            yield url
        finally:
            pg.stop()
