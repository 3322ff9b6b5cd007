"""Periodic jobs that fail alone: each runs on its own timer with its own failure count.

One loop wrapping several jobs in one `try` lets a persistent error in one starve the rest (a broken
order review stopping exits, the daily-loss check and reconciliation). Here a job that raises is
logged with its traceback, counted, and retried at its next tick; after `alert_after` failures in a
row the owner is told once (and again when it recovers). The other jobs never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from libs.common.logs import get_logger

log = get_logger(__name__)

OnFailing = Callable[["Job", bool], Awaitable[None]]  # (job, failing now?) — True when it keeps failing


@dataclass(slots=True)
class Job:
    """One periodic task; `when` (optional) skips a tick unless it returns True."""

    name: str
    every_s: float
    fn: Callable[[], Awaitable[Any]]
    when: Callable[[], bool] | None = None
    runs: int = 0
    failures: int = 0
    consecutive: int = 0
    last_error: str | None = None
    last_ok: float | None = None  # time.monotonic() of the last success
    alerted: bool = False

    def as_dict(self) -> dict[str, Any]:
        ago = None if self.last_ok is None else round(time.monotonic() - self.last_ok, 1)
        return {"every_s": self.every_s, "runs": self.runs, "failures": self.failures,
                "failing_in_a_row": self.consecutive, "last_error": self.last_error, "last_ok_s_ago": ago}


class Jobs:
    """A set of jobs, each in its own task until `stop` is set."""

    def __init__(self, on_failing: OnFailing | None = None, *, alert_after: int = 3) -> None:
        self.jobs: dict[str, Job] = {}
        self.on_failing = on_failing
        self.alert_after = alert_after

    def add(self, name: str, every_s: float, fn: Callable[[], Awaitable[Any]], *,
            when: Callable[[], bool] | None = None) -> Job:
        job = self.jobs[name] = Job(name, every_s, fn, when)
        return job

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._run(job, stop), name=f"job:{job.name}") for job in self.jobs.values()]

    async def run_once(self, job: Job) -> bool:
        """One tick of `job`; True when it succeeded (or was skipped)."""
        if job.when is not None and not job.when():
            return True
        try:
            await job.fn()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            job.failures += 1
            job.consecutive += 1
            job.last_error = f"{type(e).__name__}: {e}"[:300]
            log.exception("job_failed", job=job.name, failing_in_a_row=job.consecutive)
            if job.consecutive >= self.alert_after and not job.alerted and self.on_failing is not None:
                job.alerted = True
                await self._tell(job, True)
            return False
        job.runs += 1
        job.last_ok = time.monotonic()
        if job.alerted:
            job.alerted = False
            log.info("job_recovered", job=job.name, after_failures=job.consecutive)
            await self._tell(job, False)
        job.consecutive = 0
        return True

    async def _tell(self, job: Job, failing: bool) -> None:
        assert self.on_failing is not None
        try:
            await self.on_failing(job, failing)
        except Exception:  # telling must not become the job's failure
            log.exception("job_alert_failed", job=job.name)

    async def _run(self, job: Job, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), job.every_s)
            if stop.is_set():
                return
            await self.run_once(job)

    def failing(self) -> dict[str, str]:
        """Jobs whose last run failed: name → last error (for the heartbeat)."""
        return {j.name: f"{j.last_error} (x{j.consecutive})" for j in self.jobs.values() if j.consecutive}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: job.as_dict() for name, job in self.jobs.items()}


__all__ = ["Job", "Jobs"]
