"""Declarative base, naming convention and column helpers shared by every kdesk table.

Conventions (DESIGN §3, §5):
- money is integer: prices in $0.0001 ticks (`*_price`), money amounts in ticks (`*_ticks`), counts in
  1/100 contract (`*_count`, `position`); probabilities are floats; strikes are `Numeric(18, 4)`.
- timestamps are always `timestamptz` (a `datetime` annotation maps to `DateTime(timezone=True)`).
- ledger tables carry `mode` with a CHECK so sim, paper, demo and live rows never mix.
- no foreign keys across owning services: each service writes its own tables in whatever order events
  arrive, and redelivery is made harmless by natural keys with UNIQUE constraints instead.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    MetaData,
    Numeric,
    String,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from libs.common.config import Mode

MODES: tuple[str, ...] = tuple(m.value for m in Mode)
"""Values of `KDESK_MODE` (sim, paper, demo, live); every ledger row is stamped with one.
A new mode needs a migration too: Alembic does not compare CHECK constraints."""

# Deterministic constraint names so later migrations can drop/alter them by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STRIKE = Numeric(18, 4)
"""Strike values: °F for weather (63, 69.5) and dollars for BTC (78499.99); not money, not floats."""


class Base(DeclarativeBase):
    """Declarative base whose `metadata` holds every kdesk table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: DateTime(timezone=True),
        date: Date(),
        str: String(),
        int: BigInteger(),
        float: Double(),
        Decimal: STRIKE,
        dict[str, Any]: JSONB(),
        list[Any]: JSONB(),
    }


def created_at_column() -> Mapped[datetime]:
    """`created_at timestamptz NOT NULL DEFAULT now()`: when we first stored the row."""
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def updated_at_column() -> Mapped[datetime]:
    """`updated_at timestamptz NOT NULL DEFAULT now()`, bumped by ORM updates and by `upsert()`."""
    return mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now(),
                         nullable=False)


def mode_column() -> Mapped[str]:
    """The `mode` column of a ledger row; pair it with `mode_check()` in `__table_args__`."""
    return mapped_column(String(8), nullable=False)


def in_check(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    """A named `CHECK (column IN (...))` constraint (named `ck_<table>_<name>` by the convention)."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name)


def mode_check() -> CheckConstraint:
    """`CHECK (mode IN ('sim','paper','demo','live'))`, named `ck_<table>_mode`."""
    return in_check("mode", MODES, "mode")
