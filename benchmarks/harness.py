"""What every bus-using benchmark needs: a private, provisioned nats-server."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from libs.common.bus import Bus
from libs.common.embedded import EmbeddedNats


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
