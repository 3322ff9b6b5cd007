"""Per-test PostgreSQL databases cloned from a migrated template."""

from __future__ import annotations

import itertools
import os

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url


class PgCluster:
    """A PostgreSQL server we may create and drop databases on (embedded or KDESK_TEST_DATABASE_URL)."""

    _ids = itertools.count()

    def __init__(self, base_url: str) -> None:
        url = make_url(base_url)
        if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
            url = url.set(drivername="postgresql+psycopg")
        self._base = url

    def url(self, database: str) -> str:
        """SQLAlchemy (psycopg) URL for `database` on this server."""
        return self._base.set(database=database).render_as_string(hide_password=False)

    def _admin(self) -> psycopg.Connection:
        libpq = self._base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        return psycopg.connect(libpq, autocommit=True)

    def create(self, name: str, template: str | None = None) -> str:
        """(Re)create database `name`, optionally as a copy of `template`, and return its URL."""
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                       sql.Identifier(template))
            conn.execute(stmt)
        return self.url(name)

    def drop(self, name: str) -> None:
        """Drop database `name` if it exists, disconnecting its sessions."""
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def fresh_name(self, prefix: str = "t") -> str:
        """A database name unique to this test process."""
        return f"kdesk_{prefix}_{os.getpid()}_{next(self._ids)}"
