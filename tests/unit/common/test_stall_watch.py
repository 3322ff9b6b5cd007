"""StallWatch: when a quiet pull consumer looks for a stuck durable, and how it escalates."""

from __future__ import annotations

from libs.common.bus import StallWatch


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_look_is_due_only_after_a_quiet_interval_and_then_once_per_interval() -> None:
    clock = Clock()
    w = StallWatch(5.0, clock=clock)
    assert not w.due()  # the quiet period starts now
    clock.t = 4.9
    assert not w.due()
    clock.t = 5.0
    assert w.due()
    clock.t = 6.0
    assert not w.due()
    clock.t = 10.0
    assert w.due()
    w.received()
    clock.t = 12.0
    assert not w.due()  # a message restarted the quiet period


def test_stuck_work_escalates_from_noting_to_rebind_to_recreate() -> None:
    w = StallWatch(5.0, clock=Clock())
    assert w.look(pending=250, ack_floor=147) is None
    assert w.look(pending=250, ack_floor=147) == "rebind"
    assert w.look(pending=251, ack_floor=147) == "recreate"
    assert w.look(pending=251, ack_floor=147) == "recreate"


def test_nothing_pending_or_a_moving_ack_floor_is_not_a_stall() -> None:
    w = StallWatch(5.0, clock=Clock())
    assert w.look(pending=0, ack_floor=10) is None
    assert w.look(pending=0, ack_floor=10) is None
    assert w.look(pending=0, ack_floor=10) is None
    assert w.look(pending=5, ack_floor=10) is None
    assert w.look(pending=5, ack_floor=11) is None  # another replica is acking: the durable works
    assert w.look(pending=5, ack_floor=12) is None
    assert w.look(pending=5, ack_floor=12) is None  # first look with the floor unmoved: noted
    assert w.look(pending=5, ack_floor=12) == "rebind"
    w.received()
    assert w.look(pending=5, ack_floor=12) is None  # something arrived: start over
