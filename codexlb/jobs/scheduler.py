"""The scheduler: runs the background jobs in the leader process, off the request path.

``CodexLB.start()`` calls :meth:`Scheduler.start` (load the model cache, elect, start the loops) and
``stop()`` calls :meth:`Scheduler.stop`. Each job has its own loop task, so a slow job never delays
another, and they only use their own HTTP client and background database writes: request handling
never waits for them. Tests build ``Scheduler(lb, clock=..., background=False)`` and call
:meth:`tick` (or a job's ``run_once()``) themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx

from codexlb.jobs.base import LEADER_KEY, META_PREFIX, Clock, Job, JobStatus, instance_identity, read_statuses
from codexlb.jobs.leader import AdvisoryLockLeadership, SoloLeadership, make_leadership
from codexlb.jobs.models import ModelRegistryJob
from codexlb.jobs.tokens import TokenRefreshJob
from codexlb.jobs.usage import UsageRefreshJob
from codexlb.tasks import TaskSet

if TYPE_CHECKING:
    from codexlb.types import AppView

log = logging.getLogger("codexlb.jobs")
POLL_SECONDS = 1.0
"""Longest sleep of a job loop (due times are re-evaluated at least this often)."""


class Scheduler:
    """Owns the jobs (``usage``, ``models``, ``tokens``), the leader election and their loops."""

    def __init__(self, lb: AppView, *, clock: Clock = time.time, background: bool = True,
                 leader_retry_seconds: float = 3.0, heartbeat_seconds: float = 30.0) -> None:
        self.lb, self.clock, self.background = lb, clock, background
        self.leader_retry_seconds, self.heartbeat_seconds = leader_retry_seconds, heartbeat_seconds
        self.identity = instance_identity()
        self.usage = UsageRefreshJob(lb, clock)
        self.models = ModelRegistryJob(lb, clock)
        self.tokens = TokenRefreshJob(lb, clock)
        self.jobs: dict[str, Job] = {j.name: j for j in (self.usage, self.models, self.tokens)}
        self.leadership: SoloLeadership | AdvisoryLockLeadership | None = None
        self.client: httpx.AsyncClient | None = None
        self.tasks = TaskSet()
        self.leader_since: float | None = None
        self._leading = asyncio.Event()
        self._beat_at: float | None = None
        self._reload_models_at: float | None = None
        self.started = False

    @property
    def is_leader(self) -> bool:
        """This process leads (as of the last check)."""
        return self._leading.is_set()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model cache, create the HTTP client, and (in background mode) start the loops."""
        if self.started:
            return
        self.started = True
        if self.lb.models.enabled:
            await self.lb.models.load()
        self.leadership = make_leadership(self.lb.settings, self.identity["instance"])
        self.client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        self.usage.client = self.models.client = self.client
        for job in self.jobs.values():
            job.next_due()  # first runs are counted from now
        if self.background:
            self.tasks.spawn(self._leader_loop(), "jobs-leader")
            for job in self.jobs.values():
                if job.enabled:
                    self.tasks.spawn(self._job_loop(job), f"job-{job.name}")

    async def stop(self) -> None:
        """Cancel the loops, give up leadership, close the HTTP client."""
        if not self.started:
            return
        self.started = False
        await self.tasks.cancel_all()
        self._leading.clear()
        if self.leadership is not None:
            await self.leadership.close()
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    # -- scheduling ---------------------------------------------------------------------------
    async def check_leader(self) -> bool:
        """Keep/take leadership (or follow); leader bookkeeping happens here. Never raises."""
        if self.leadership is None:
            return False
        was = self._leading.is_set()
        try:
            leading = await self.leadership.check()
        except Exception:
            log.exception("jobs: leader check failed")
            leading = False
        now = self.clock()
        if leading:
            if not was:
                self.leader_since, self._beat_at = now, None
                await self._adopt()
                self._leading.set()
                await self._persist_all()
            if self._beat_at is None or now >= self._beat_at + self.heartbeat_seconds:
                await self._heartbeat(now)
        else:
            self._leading.clear()
            if was:
                self.leader_since = None
            await self._follow(now)
        return leading

    async def tick(self) -> bool:
        """One step: check leadership, then run each due, enabled job in turn; ``True`` when leader."""
        if not await self.check_leader():
            return False
        for job in self.jobs.values():
            if job.enabled and await job.tick():
                await self._persist(job)
        return True

    async def run_now(self, name: str) -> JobStatus:
        """Run one job now regardless of its schedule (and of leadership), and persist its status."""
        job = self.jobs[name]
        status = await job.run_once()
        await self._persist(job)
        return status

    async def _leader_loop(self) -> None:
        while True:
            await self.check_leader()
            await asyncio.sleep(self.leader_retry_seconds)

    async def _job_loop(self, job: Job) -> None:
        while True:
            await self._leading.wait()
            try:
                if await job.tick():
                    await self._persist(job)
            except Exception:  # the loop must survive anything a job does
                log.exception("job %s crashed", job.name)
            delay = min(max(job.next_due() - self.clock(), 0.01), POLL_SECONDS)
            await asyncio.sleep(delay)

    async def _follow(self, now: float) -> None:
        """Follower duty: pick up the model list the leader stored, once per registry interval."""
        models = self.lb.models
        if not models.enabled:
            return
        if self._reload_models_at is None or now >= self._reload_models_at:
            self._reload_models_at = now + self.models.interval
            await models.load()

    # -- status -------------------------------------------------------------------------------
    def leader_record(self, now: float | None = None) -> dict[str, Any]:
        backend = getattr(self.leadership, "backend", "unknown")
        return {**self.identity, "since": self.leader_since, "heartbeat": now or self.clock(), "backend": backend}

    async def _put(self, key: str, value: str) -> None:
        if self.lb.sessionmaker is None:
            return
        from codexlb.db.registry import put_meta

        try:
            await put_meta(self.lb.sessionmaker, key, value)
        except Exception as exc:
            log.warning("jobs: could not save %s (%s)", key, type(exc).__name__)

    async def _heartbeat(self, now: float) -> None:
        self._beat_at = now
        await self._put(LEADER_KEY, json.dumps(self.leader_record(now), separators=(",", ":")))

    async def _persist(self, job: Job) -> None:
        status = job.status
        status.enabled, status.leader = job.enabled, dict(self.identity)
        status.next_run = job.next_due() if job.enabled else None
        await self._put(META_PREFIX + job.name, status.to_json())

    async def _adopt(self) -> None:
        """Take over the statuses (and schedules) the previous leader left in ``meta``."""
        if self.lb.sessionmaker is None:
            return
        try:
            _, stored = await read_statuses(self.lb.sessionmaker)
        except Exception as exc:
            log.warning("jobs: could not read the previous job statuses (%s)", type(exc).__name__)
            return
        for name, job in self.jobs.items():
            job.adopt(stored.get(name))
        await self.usage.resume()

    async def _persist_all(self) -> None:
        for job in self.jobs.values():
            await self._persist(job)

    async def describe(self) -> dict[str, Any]:
        """What ``GET /api/jobs`` shows: this instance, the leader, and each job's status."""
        leader: dict[str, Any] | None = None
        stored: dict[str, JobStatus] = {}
        error = None
        if self.lb.sessionmaker is not None:
            try:
                leader, stored = await read_statuses(self.lb.sessionmaker)
            except Exception as exc:
                error = f"could not read job statuses ({type(exc).__name__})"
        if self.is_leader:
            leader = self.leader_record()
        jobs = []
        for name, job in self.jobs.items():
            status = job.status if self.is_leader or name not in stored else stored[name]
            if self.is_leader:
                status.next_run = job.next_due() if job.enabled else None
            jobs.append({**json.loads(status.to_json()), "enabled": job.enabled,
                         "leader": self.is_leader, "ran_by": status.leader})
        return {"instance": {**self.identity, "is_leader": self.is_leader}, "leader": leader, "jobs": jobs,
                **({"error": error} if error else {})}
