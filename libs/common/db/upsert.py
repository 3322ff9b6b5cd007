"""Idempotent writes: insert-if-new and upsert keyed by a natural key, single-row and bulk.

Every statement uses `RETURNING` to learn what happened: with psycopg's async driver `rowcount` is -1
for these inserts, so it cannot tell a new row from a duplicate. For `ON CONFLICT DO UPDATE` the
returned `xmax = 0` is true only for a freshly inserted row version (an updated one carries the
updating transaction's id), which tells an insert from an update in the same round trip.

Bulk variants pass all rows as one executemany; SQLAlchemy's "insertmanyvalues" turns that into
multi-row `INSERT ... VALUES (...), (...) ... RETURNING` statements of up to 1,000 rows (and under
PostgreSQL's bind-parameter limit), compiled once.

All helpers take an `AsyncSession` or an `AsyncConnection` and leave the transaction to the caller.
Values are keyed by column name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, func, literal_column
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from libs.common.db.base import Base

Executor = AsyncSession | AsyncConnection
Target = type[Base] | Table
# A WHERE for the DO UPDATE branch: an expression, or a function of the `excluded` row (the proposed values),
# e.g. `lambda excluded: Market.exchange_updated_at < excluded.exchange_updated_at` ("only if newer").
UpdateWhere = ColumnElement[bool] | Callable[[Any], ColumnElement[bool]]


class UpsertError(ValueError):
    """A helper was called with a key or columns that do not fit the table."""


def _table(model: Target) -> Table:
    table = model if isinstance(model, Table) else model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every mapped kdesk model has a Table
        raise UpsertError(f"{model!r} is not mapped to a table")
    return table


def _check_columns(table: Table, names: Sequence[str], what: str) -> None:
    unknown = [n for n in names if n not in table.c]
    if unknown:
        raise UpsertError(f"{what} names columns {unknown} that {table.name} does not have")


def _check_rows(table: Table, rows: Sequence[Mapping[str, Any]], key: Sequence[str]) -> list[str]:
    """The column names of `rows`, which must all name the same columns, including the key."""
    _check_columns(table, key, "key")
    columns = list(rows[0])
    _check_columns(table, columns, "values")
    missing = [k for k in key if k not in rows[0]]
    if missing:
        raise UpsertError(f"values for {table.name} lack key columns {missing}")
    names = set(columns)
    odd = [i for i, r in enumerate(rows) if set(r) != names]
    if odd:
        raise UpsertError(f"rows {odd[:5]} for {table.name} do not name the same columns as row 0")
    return columns


async def _execute(session: Executor, stmt: Insert, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    params: Any = dict(rows[0]) if len(rows) == 1 else [dict(r) for r in rows]
    result = await session.execute(stmt, params)
    return [row[0] for row in result.all()]


async def insert_if_new(session: Executor, model: Target, values: Mapping[str, Any], *,
                        key: Sequence[str]) -> bool:
    """Insert one row unless a row with the same `key` columns exists; True when it was inserted."""
    return await insert_many_if_new(session, model, [values], key=key) == 1


async def insert_many_if_new(session: Executor, model: Target, rows: Sequence[Mapping[str, Any]], *,
                             key: Sequence[str]) -> int:
    """Insert every row whose `key` is not yet present (duplicates inside `rows` too); the number inserted."""
    if not rows:
        return 0
    table = _table(model)
    _check_rows(table, rows, key)
    stmt = insert(table).on_conflict_do_nothing(index_elements=list(key)).returning(literal_column("1"))
    return len(await _execute(session, stmt, rows))


async def upsert(session: Executor, model: Target, values: Mapping[str, Any], *, key: Sequence[str],
                 update: Sequence[str] | None = None, where: UpdateWhere | None = None) -> bool:
    """Insert one row or update the existing row with the same `key`; True when it was newly inserted.

    `update` lists the columns to overwrite on conflict (default: every given column outside the key);
    `updated_at` is bumped when the table has it. `where` restricts the update (see `UpdateWhere`); a row
    it skips counts as not inserted. An empty `update` behaves like `insert_if_new`.
    """
    return await upsert_many(session, model, [values], key=key, update=update, where=where) == 1


async def upsert_many(session: Executor, model: Target, rows: Sequence[Mapping[str, Any]], *,
                      key: Sequence[str], update: Sequence[str] | None = None,
                      where: UpdateWhere | None = None) -> int:
    """Upsert many rows at once (see `upsert`); the number of rows newly inserted.

    Rows repeating a key inside `rows` are collapsed to the last one first: PostgreSQL refuses to
    update the same row twice in one statement.
    """
    if not rows:
        return 0
    table = _table(model)
    columns = _check_rows(table, rows, key)
    unique = list({tuple(r[k] for k in key): r for r in rows}.values())
    cols = [c for c in (columns if update is None else update) if c not in key and c != "created_at"]
    absent = [c for c in cols if c not in columns]
    if absent:
        raise UpsertError(f"update names columns {absent} that the rows for {table.name} do not carry")
    if not cols:
        return await insert_many_if_new(session, table, unique, key=key)
    stmt = insert(table)
    set_: dict[str, Any] = {c: stmt.excluded[c] for c in cols}
    if "updated_at" in table.c and "updated_at" not in set_:
        set_["updated_at"] = func.now()
    cond = where(stmt.excluded) if callable(where) else where
    stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=set_, where=cond)
    inserted = await _execute(session, stmt.returning(literal_column("xmax = 0").label("inserted")), unique)
    return sum(1 for was_new in inserted if was_new)
