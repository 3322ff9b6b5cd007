"""The order status machine: the moves the venue can make, and the ones a late frame must not."""

from __future__ import annotations

import pytest

from services.executor import order_status as S


@pytest.mark.parametrize(("prev", "new"), [
    ("intent", "pending"), ("pending", "resting"), ("pending", "executed"), ("pending", "canceled"),
    ("pending", "rejected"), ("resting", "executed"), ("resting", "canceled"), ("intent", "blocked"),
    ("intent", "resting"),  # reconciliation adopting an order whose pending mark was lost
    ("resting", "resting"), ("canceled", "canceled"),  # new totals, same status
])
def test_allowed_moves(prev: str, new: str) -> None:
    assert S.allowed(prev, new)


@pytest.mark.parametrize(("prev", "new"), [
    ("executed", "resting"), ("canceled", "resting"), ("rejected", "pending"), ("blocked", "pending"),
    ("resting", "pending"), ("resting", "intent"), ("pending", "intent"), ("executed", "canceled"),
    ("resting", "rejected"), ("pending", "blocked"),
])
def test_refused_moves(prev: str, new: str) -> None:
    assert not S.allowed(prev, new)


def test_every_final_status_is_terminal_and_every_status_is_known() -> None:
    statuses = {"intent", "pending", "resting", "executed", "canceled", "rejected", "blocked"}
    assert S.FINAL | S.OPEN == statuses and not S.FINAL & S.OPEN
    for final in S.FINAL:
        assert not any(S.allowed(final, other) for other in statuses - {final})


def test_event_kinds() -> None:
    assert S.event_kind("resting", 0) == "resting"
    assert S.event_kind("resting", 300) == "partially_filled"
    assert S.event_kind("executed", 1000) == "filled"
    assert S.event_kind("canceled", 0) == "canceled"
