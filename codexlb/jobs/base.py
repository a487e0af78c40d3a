"""What every background job shares: the clock, the run bookkeeping and the persisted status.

A job's status (enabled, who ran it, last run, next run, last error) is written by the leader to the
``meta`` table under ``jobs.<name>`` so ``codexlb jobs`` and ``GET /api/jobs`` can show it from any
process. Time comes from an injectable clock so tests drive the schedule without waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from codexlb.types import AppView

log = logging.getLogger("codexlb.jobs")

Clock = Callable[[], float]
"""Returns unix time in seconds (``time.time`` unless a test injects its own)."""

META_PREFIX = "jobs."
RETRY_AFTER_FAILURE_SECONDS = 60.0
"""A run that had problems is tried again after at most this long (instead of a whole interval)."""
LEADER_KEY = "jobs.leader"
"""``meta`` key of the current leader: instance, host, pid, since, heartbeat."""


def instance_identity() -> dict[str, Any]:
    """Who this process is, as shown in job statuses: a random instance id, host name and pid."""
    return {"instance": uuid.uuid4().hex[:12], "host": socket.gethostname(), "pid": os.getpid()}


@dataclass(slots=True)
class JobStatus:
    """What is known about one job's runs; stored as JSON in ``meta``."""

    name: str
    description: str = ""
    enabled: bool = True
    leader: dict[str, Any] | None = None
    """Identity of the process that last ran the job (the leader at that time)."""
    last_run: float | None = None
    """When the last run started."""
    last_duration: float | None = None
    last_ok: bool | None = None
    next_run: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    runs: int = 0
    errors: int = 0
    updated_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> JobStatus:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Job:
    """One periodic job. Subclasses set ``name``/``description`` and implement :meth:`work`.

    :meth:`tick` runs the job when it is due; :meth:`run_once` runs it now. Runs never overlap.
    Problems that do not stop the whole run are reported with :meth:`problem`.
    """

    name: ClassVar[str] = "job"
    description: ClassVar[str] = ""

    def __init__(self, lb: AppView, clock: Clock = time.time) -> None:
        self.lb, self.clock = lb, clock
        self.status = JobStatus(self.name, self.description, self.enabled)
        self.ran = asyncio.Event()
        """Set after every run (tests wait on it; clear it before waiting for the next one)."""
        self._lock = asyncio.Lock()
        self._next: float | None = None
        self._problems: list[str] = []

    @property
    def enabled(self) -> bool:
        return True

    @property
    def interval(self) -> float:
        """Seconds between runs."""
        return 60.0

    @property
    def first_delay(self) -> float:
        """Seconds from start until the first run."""
        return 0.0

    def next_due(self) -> float:
        """When the job next wants to run (unix time)."""
        if self._next is None:
            self._next = self.clock() + self.first_delay
        return self._next

    def due(self) -> bool:
        return self.enabled and self.clock() >= self.next_due()

    async def tick(self) -> bool:
        """Run when due; ``True`` if it ran."""
        if not self.due():
            return False
        await self.run_once()
        return True

    async def run_once(self, **options: Any) -> JobStatus:
        """Run the job now (waiting for a run in progress first) and record the outcome.

        ``options`` go to :meth:`work`.
        """
        async with self._lock:
            start = self.clock()
            self._problems = []
            try:
                await self.work(**options)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a job failure is recorded, never raised into the scheduler
                log.warning("job %s failed: %s", self.name, exc, exc_info=not isinstance(exc, JobError))
                self._problems.append(str(exc) or type(exc).__name__)
            end = self.clock()
            self._after_run(start, end)
            self._record(start, end)
            self.ran.set()
            return self.status

    def _after_run(self, start: float, end: float) -> None:
        """Plan the next run: one interval after this one started, sooner after a failed run."""
        delay = min(self.interval, RETRY_AFTER_FAILURE_SECONDS) if self._problems else self.interval
        self._next = start + delay

    def _record(self, start: float, end: float) -> None:
        st = self.status
        st.enabled, st.last_run, st.last_duration = self.enabled, start, max(0.0, end - start)
        st.runs += 1
        st.last_ok = not self._problems
        if self._problems:
            st.errors += 1
            st.last_error = "; ".join(self._problems)[:1000]
            st.last_error_at = end
        st.next_run = self.next_due()
        st.updated_at = end

    resumes_schedule: ClassVar[bool] = True
    """Whether a new leader keeps the previous leader's ``next_run`` (see :meth:`adopt`)."""

    def adopt(self, previous: JobStatus | None) -> None:
        """Continue the status (and schedule) a previous leader persisted, so a takeover causes no burst."""
        if previous is None or self.status.runs:
            return
        for name in ("last_run", "last_duration", "last_ok", "last_error", "last_error_at", "runs", "errors"):
            setattr(self.status, name, getattr(previous, name))
        if self.resumes_schedule and previous.next_run is not None:
            self._next = min(previous.next_run, self.clock() + self.interval)

    def problem(self, message: str) -> None:
        """Note a partial failure of the current run (shown as the job's last error)."""
        log.warning("job %s: %s", self.name, message)
        self._problems.append(message)

    async def work(self, **options: Any) -> None:
        """The job's work; raise :class:`JobError` (or anything) when the whole run failed."""
        raise NotImplementedError


class JobError(Exception):
    """An expected failure of a whole run (logged without a traceback)."""


async def read_statuses(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[dict[str, Any] | None,
                                                                                   dict[str, JobStatus]]:
    """The persisted leader record and job statuses (by name) from ``meta``."""
    from sqlalchemy import select

    from codexlb.db.models import MetaRow

    async with sessionmaker() as session:
        rows = (await session.execute(select(MetaRow.key, MetaRow.value).where(
            MetaRow.key.startswith(META_PREFIX, autoescape=True)))).all()
    leader: dict[str, Any] | None = None
    statuses: dict[str, JobStatus] = {}
    for key, value in rows:
        try:
            if key == LEADER_KEY:
                leader = json.loads(value)
            else:
                status = JobStatus.from_json(value)
                statuses[status.name] = status
        except (ValueError, TypeError):
            log.warning("ignoring unreadable job status %s", key)
    return leader, statuses
