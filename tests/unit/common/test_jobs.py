"""Periodic jobs fail alone: a job that keeps raising is counted and reported; the others run on."""

from __future__ import annotations

import asyncio

from libs.common.jobs import Job, Jobs


async def test_a_failing_job_is_counted_alerted_once_and_recovery_is_told() -> None:
    told: list[tuple[str, bool, int]] = []

    async def on_failing(job: Job, failing: bool) -> None:
        told.append((job.name, failing, job.consecutive))

    broken = {"on": True}

    async def review() -> None:
        if broken["on"]:
            raise RuntimeError("queue position contract changed")

    async def exits() -> None:
        return None

    jobs = Jobs(on_failing, alert_after=3)
    r, e = jobs.add("review", 0.01, review), jobs.add("exits", 0.01, exits)
    for _ in range(5):
        assert not await jobs.run_once(r)
        assert await jobs.run_once(e)
    assert (r.failures, r.consecutive, e.runs, e.failures) == (5, 5, 5, 0)
    assert told == [("review", True, 3)]  # once, at the third failure in a row
    assert jobs.failing() == {"review": "RuntimeError: queue position contract changed (x5)"}
    broken["on"] = False
    assert await jobs.run_once(r)
    assert told[-1] == ("review", False, 5) and r.consecutive == 0 and jobs.failing() == {}
    snap = jobs.snapshot()
    assert snap["review"]["failures"] == 5 and snap["review"]["runs"] == 1 and snap["exits"]["runs"] == 5


async def test_jobs_run_on_their_own_timers_and_stop_promptly() -> None:
    ran = {"fast": 0, "broken": 0}
    enough = asyncio.Event()

    def count(name: str) -> None:
        ran[name] += 1
        if ran["fast"] >= 20 and ran["broken"] >= 20:
            enough.set()

    async def fast() -> None:
        count("fast")

    async def broken() -> None:
        count("broken")
        raise ValueError("always")

    async def boom(job: Job, failing: bool) -> None:
        raise OSError("the bus is away")  # telling failed: the job loop must go on anyway

    jobs = Jobs(boom, alert_after=1)
    jobs.add("fast", 0.005, fast)
    jobs.add("broken", 0.005, broken)
    jobs.add("skipped", 0.005, fast, when=lambda: False)
    stop = asyncio.Event()
    tasks = jobs.start(stop)
    await asyncio.wait_for(enough.wait(), 5)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert jobs.jobs["broken"].failures == ran["broken"] and jobs.jobs["skipped"].runs == 0
    assert ran["fast"] == jobs.jobs["fast"].runs
